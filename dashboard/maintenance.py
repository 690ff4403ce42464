"""Maintenance pages: the OCPP message log (filters, CSV/JSON download) and the system's health."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.core.paginator import Paginator
from django.db.models import Max, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.dateparse import parse_datetime

from chargers.models import Charger, Direction, OcppMessage
from dashboard import backup as backups
from dashboard import roles
from dashboard.views import page_context
from evce import clock
from loadmgmt.models import Setpoint, SiteSettings
from meters.models import Meter

logger = logging.getLogger(__name__)

PAGE_SIZE = 100
# A download is a maintenance aid: bounded, newest first.
DOWNLOAD_MAX_ROWS = 50_000
# How long before its answer a call may have been logged (OCPP_CALL_TIMEOUT is at most 600 s).
ANSWER_WINDOW = dt.timedelta(minutes=15)
LOG_FIELDS = ("timestamp", "charge_point_id", "direction", "message_type", "unique_id", "action", "payload", "error")


def _filtered(request: HttpRequest) -> tuple[QuerySet[OcppMessage], dict[str, str]]:
    params = {key: request.GET.get(key, "").strip() for key in ("charger", "direction", "action", "since", "until",
                                                              "errors")}
    rows = OcppMessage.objects.all()
    if params["charger"]:
        rows = rows.filter(charge_point_id__iexact=params["charger"])
    if params["direction"] in Direction.values:
        rows = rows.filter(direction=params["direction"])
    if params["action"]:
        rows = rows.filter(action__iexact=params["action"])
    for key, lookup in (("since", "timestamp__gte"), ("until", "timestamp__lte")):
        moment = parse_datetime(params[key]) if params[key] else None
        if moment is not None:
            rows = rows.filter(**{lookup: moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)})
    if params["errors"]:
        rows = rows.exclude(error="")
    return rows, params


@roles.requires(roles.VIEW)
def log(request: HttpRequest) -> HttpResponse:
    rows, params = _filtered(request)
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    answers_to = _answered_actions(list(page.object_list))
    for message in page.object_list:
        message.payload_text = json.dumps(message.payload, ensure_ascii=False, indent=1)  # type: ignore[attr-defined]
        message.answer_to = answers_to.get((message.charge_point_id, message.unique_id), "")  # type: ignore[attr-defined]
    return render(request, "dashboard/log.html", page_context(
        request, "log", page=page, params=params, query=query.urlencode(), directions=Direction.choices,
        chargers=Charger.objects.values_list("charge_point_id", flat=True),
    ))


def _answered_actions(messages: list[OcppMessage]) -> dict[tuple[str, str], str]:
    """The action each CALLRESULT/CALLERROR on the page answers (they carry only the call's id)."""
    answers = [m for m in messages if m.message_type in ("CALLRESULT", "CALLERROR") and m.unique_id]
    if not answers:
        return {}
    # A logged answer came within its call's timeout (OCPP_CALL_TIMEOUT, at most 600 s; later
    # ones are dropped unlogged): the calls are looked for in that window, on the time index.
    since = min(m.timestamp for m in answers) - ANSWER_WINDOW
    calls = OcppMessage.objects.filter(timestamp__gte=since, timestamp__lte=max(m.timestamp for m in answers),
                                       message_type="CALL", unique_id__in={m.unique_id for m in answers},
                                       charge_point_id__in={m.charge_point_id for m in answers})
    return {(cp, uid): action for cp, uid, action in calls.values_list("charge_point_id", "unique_id", "action")}


def _row(message: OcppMessage) -> dict[str, Any]:
    return {"timestamp": message.timestamp.isoformat(), "charge_point_id": message.charge_point_id,
            "direction": message.direction, "message_type": message.message_type, "unique_id": message.unique_id,
            "action": message.action, "payload": message.payload, "error": message.error}


@roles.requires(roles.VIEW)
def log_download(request: HttpRequest, fmt: str) -> HttpResponse:
    """The filtered log as CSV (payload as JSON text) or JSON lines, newest first, bounded."""
    rows, _ = _filtered(request)
    messages = [_row(message) for message in rows[:DOWNLOAD_MAX_ROWS]]
    stamp = f"{clock.now():%Y%m%d-%H%M%S}"
    if fmt == "json":
        body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in messages)
        response = HttpResponse(body, content_type="application/x-ndjson; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="ocpp-log-{stamp}.jsonl"'
        return response
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_FIELDS)
    writer.writeheader()
    for row in messages:
        writer.writerow({**row, "payload": json.dumps(row["payload"], ensure_ascii=False),
                         **{k: _safe_cell(row[k]) for k in ("charge_point_id", "action", "error", "unique_id")}})
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="ocpp-log-{stamp}.csv"'
    return response


def _safe_cell(text: str) -> str:
    """Charger-supplied text must not become a spreadsheet formula when the CSV is opened."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def health_checks(now: dt.datetime) -> list[Check]:
    """What an operator checks first when something looks wrong: loop, Redis, meters, chargers."""
    site = SiteSettings.load()
    redis_check, tick_ms_left = _redis_check()
    checks = [_loop_check(now, site, tick_ms_left), redis_check]
    for meter in Meter.objects.filter(enabled=True).select_related("zone"):
        stale = meter.is_stale(now, site.measurement_max_age_s)
        detail = (f"last reading {meter.last_reading_at:%H:%M:%S}" if meter.last_reading_at else "never read")
        if meter.last_error:
            detail += f"; last error: {meter.last_error[:120]} ({meter.consecutive_failures} in a row)"
        checks.append(Check(f"Meter {meter.name}", not stale, detail))
    offline = list(Charger.objects.filter(registration_status="accepted", connected=False)
                   .values_list("charge_point_id", flat=True)[:50])
    checks.append(Check("Chargers", not offline, f"offline: {', '.join(offline)}" if offline else "all online"))
    return checks


def _loop_check(now: dt.datetime, site: SiteSettings, tick_ms_left: int | None) -> Check:
    """Every periodic tick sets a Redis key that lives one loop period (loadmgmt.tasks.GATE_KEY):
    while it exists, beat fires and a worker runs the loop. Decisions are recorded only when one
    changes, so their age tells when the loop last changed something, not whether it runs."""
    last_decision = Setpoint.objects.aggregate(at=Max("timestamp"))["at"]
    changed = "never" if last_decision is None else f"{(now - last_decision).total_seconds():.0f} s ago"
    running = tick_ms_left is not None and tick_ms_left > 0
    state = (f"a tick started within the last {site.loop_period_s} s" if running
             else f"no tick within the last {site.loop_period_s} s: is the Celery worker or beat stopped?")
    return Check("Control loop", running, f"{state}; last change of decision {changed}")


def _redis_check() -> tuple[Check, int | None]:
    """Redis carries the channel layer (live pages, commands) and the Celery broker."""
    from loadmgmt.tasks import GATE_KEY  # noqa: PLC0415 - the loop's own key, read only

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
        tick_ms_left = int(client.pttl(GATE_KEY))
    except redis.RedisError as error:
        return Check("Redis (channel layer, Celery broker)", False, f"unreachable: {error}"), None
    finally:
        client.close()
    return Check("Redis (channel layer, Celery broker)", True, "reachable"), tick_ms_left


@roles.requires(roles.VIEW)
def health(request: HttpRequest) -> HttpResponse:
    checks = health_checks(clock.now())
    return render(request, "dashboard/health.html", page_context(
        request, "health", checks=checks, all_ok=all(check.ok for check in checks)))


# A configuration of 250 chargers, 200 zones and 10,000 badges is a few MB: refuse far larger.
RESTORE_MAX_BYTES = 20 * 1024 * 1024


@roles.requires(roles.CONFIGURE)
def backup_page(request: HttpRequest) -> HttpResponse:
    """Download the configuration, or upload one to check or restore (admins only: it holds badges
    and charger password hashes)."""
    report = None
    problem = ""
    if request.method == "POST":
        upload = request.FILES.get("backup")
        if upload is None:
            problem = "Choose a backup file."
        elif (upload.size or 0) > RESTORE_MAX_BYTES:
            problem = f"The file is larger than {RESTORE_MAX_BYTES // (1024 * 1024)} MB: not a configuration backup."
        else:
            try:
                document = json.loads(upload.read().decode("utf-8"))
                report = backups.restore(document, dry_run=request.POST.get("check_only") == "1")
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                problem = f"The file is not JSON: {error}."
            except backups.RestoreRefused as error:
                problem = f"Nothing restored: {error}."
        if report is not None:
            logger.info("dashboard: %s uploaded a backup: ok=%s dry_run=%s created=%s updated=%s errors=%d",
                        request.user.get_username(), report.ok, report.dry_run, dict(report.created),
                        dict(report.updated), len(report.errors))
    return render(request, "dashboard/backup.html", page_context(
        request, "health", report=report, problem=problem), status=400 if problem else 200)


@roles.requires(roles.CONFIGURE)
def backup_download(request: HttpRequest) -> JsonResponse:
    response = JsonResponse(backups.backup(now=clock.now()), json_dumps_params={"indent": 1, "ensure_ascii": False})
    response["Content-Disposition"] = f'attachment; filename="evce-configuration-{clock.now():%Y%m%d-%H%M%S}.json"'
    return response
