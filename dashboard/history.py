"""Sessions list (filters, totals, CSV), a session's curve, and the site power chart's data.

The list and the CSV use the same selector as the admin and `transactions_export`
(`transactions.selectors.transactions_history`) and the same CSV columns
(`TransactionResource`), so the three never disagree.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from django.core.paginator import Paginator
from django.db.models import Q, QuerySet, Sum
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.utils.dateparse import parse_date

from badges.models import BadgeGroup
from chargers.models import Charger
from dashboard import roles
from dashboard.views import page_context
from evce import clock
from loadmgmt.models import SiteSettings, Zone
from meters.models import MeterReading, MeterRole
from transactions.energy import ENERGY, POWER
from transactions.models import MeterSample, Transaction, TransactionState
from transactions.resources import TransactionResource
from transactions.selectors import Period, site_aggregate, transactions_history

PAGE_SIZE = 100
CURVE_MEASURANDS = (POWER, "Current.Import", "Current.Offered", ENERGY)
SITE_CHART_HOURS = (1, 3, 6, 12, 24)
VOLTAGE_V = 230.0
# The site chart reads at most this many samples (~a day of 20 chargers at 1 sample/min):
# a wall screen must never make the database scan the whole history.
SITE_CHART_MAX_SAMPLES = 200_000


def _filtered(request: HttpRequest) -> tuple[QuerySet[Transaction], dict[str, str], list[str]]:
    """Sessions matching the query string, the filters as given, and what was wrong with them."""
    params = {key: request.GET.get(key, "").strip() for key in ("charger", "badge", "group", "from", "to", "state")}
    errors: list[str] = []
    period = None
    first, last = parse_date(params["from"] or "") if params["from"] else None, None
    if params["to"]:
        last = parse_date(params["to"])
    if (params["from"] and first is None) or (params["to"] and last is None):
        errors.append("dates are YYYY-MM-DD")
    elif first or last:
        try:
            period = Period.of_days(first or dt.date(2000, 1, 1), last or timezone.localdate(clock.now()))
        except ValueError as error:
            errors.append(str(error))
    sessions = transactions_history(
        period=period,
        charger_pk=int(params["charger"]) if params["charger"].isdigit() else None,
        group_pk=int(params["group"]) if params["group"].isdigit() else None,
    )
    if params["badge"]:
        sessions = sessions.filter(Q(id_tag__icontains=params["badge"]) | Q(badge__holder__icontains=params["badge"]))
    if params["state"] in TransactionState.values:
        sessions = sessions.filter(state=params["state"])
    return sessions, params, errors


@roles.requires(roles.VIEW)
def sessions(request: HttpRequest) -> HttpResponse:
    """Charging sessions with filters and totals; the same filters give the CSV."""
    rows, params, errors = _filtered(request)
    totals = rows.aggregate(energy_wh=Sum("energy_wh"))
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "dashboard/sessions.html", page_context(
        request, "sessions", page=page, params=params, errors=errors, count=page.paginator.count,
        energy_kwh=(totals["energy_wh"] or 0) / 1000.0, query=query.urlencode(),
        chargers=Charger.objects.only("pk", "charge_point_id"), groups=BadgeGroup.objects.all(),
        states=TransactionState.choices, hours=SITE_CHART_HOURS,
    ))


@roles.requires(roles.VIEW)
def sessions_csv(request: HttpRequest) -> HttpResponse:
    rows, _, _ = _filtered(request)
    data = TransactionResource().export(rows.order_by("start_time", "pk"))
    response = HttpResponse(data.export("csv"), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="sessions-{clock.now():%Y%m%d-%H%M%S}.csv"'
    return response


@roles.requires(roles.VIEW)
def session(request: HttpRequest, pk: int) -> HttpResponse:
    """One session: its figures and curve; a running one is live (new meter values extend the curve)."""
    context = session_live_context(pk)
    if context is None:
        raise Http404("no such session")
    running = context["session"].state == TransactionState.ACTIVE
    return render(request, "dashboard/session.html", page_context(
        request, "sessions", **context, live_url=f"/ws/dashboard/session/{pk}/" if running else None))


def session_live_context(pk: int) -> dict[str, Any] | None:
    """What the live part of the session page shows; the websocket re-renders it with the same data."""
    record = Transaction.objects.select_related("charger", "badge").filter(pk=pk).first()
    return None if record is None else {"session": record}


@roles.requires(roles.VIEW)
def session_curve(request: HttpRequest, pk: int) -> JsonResponse:
    """Columns for uPlot: epoch seconds, power (kW), per-phase current (A), offered current (A)."""
    get_object_or_404(Transaction, pk=pk)
    rows = (MeterSample.objects.filter(transaction_id=pk, measurand__in=CURVE_MEASURANDS, value__isnull=False)
            .order_by("timestamp", "pk").values_list("timestamp", "measurand", "phase", "unit", "value"))
    return JsonResponse(curve_columns([row for row in rows if row[4] is not None]))  # type: ignore[misc]


def curve_columns(rows: list[tuple[dt.datetime, str, str, str, float]]) -> dict[str, Any]:
    """One row per timestamp; power in kW (summed over phases), currents per phase (max when unphased)."""
    names = ["power_kw", "L1", "L2", "L3", "offered_a"]
    per_time: dict[float, dict[str, float]] = defaultdict(dict)
    for timestamp, measurand, phase, unit, value in rows:
        point = per_time[timestamp.timestamp()]
        if measurand == POWER:
            point["power_kw"] = point.get("power_kw", 0.0) + value * (1.0 if unit.lower() == "kw" else 0.001)
        elif measurand == "Current.Import":
            key = phase[:2] if phase[:2] in ("L1", "L2", "L3") else "L1"
            point[key] = max(point.get(key, 0.0), value)
        elif measurand == "Current.Offered":
            point["offered_a"] = value
    times = sorted(per_time)
    return {"t": times, **{name: [per_time[t].get(name) for t in times] for name in names}}


@roles.requires(roles.VIEW)
def site_power(request: HttpRequest) -> JsonResponse:
    """Site power per minute over the last hours: EV (sum of the chargers), building and PV meters."""
    hours = int(request.GET.get("hours", "6")) if request.GET.get("hours", "6").isdigit() else 6
    hours = min(max(hours, 1), 24)
    now = clock.now()
    since = now - dt.timedelta(hours=hours)
    return JsonResponse(site_power_columns(since=since, now=now))


def _minute(moment: dt.datetime) -> int:
    return int(moment.timestamp() // 60 * 60)


def site_power_columns(*, since: dt.datetime, now: dt.datetime) -> dict[str, Any]:
    """EV kW = per minute, the sum over sessions of each session's average power in that minute."""
    per_session: dict[tuple[int, int], list[float]] = defaultdict(list)
    rows = (MeterSample.objects.filter(measurand=POWER, timestamp__gte=since, timestamp__lte=now, value__isnull=False)
            .order_by("-timestamp").values_list("transaction_id", "charger_id", "timestamp", "unit", "value")
            [:SITE_CHART_MAX_SAMPLES])
    for transaction_id, charger_id, timestamp, unit, value in rows:
        if value is None:
            continue
        key = (_minute(timestamp), transaction_id or -charger_id)
        per_session[key].append(value * (1.0 if unit.lower() == "kw" else 0.001))
    ev: dict[int, float] = defaultdict(float)
    for (minute, _), values in per_session.items():
        ev[minute] += sum(values) / len(values)
    building: dict[int, float] = defaultdict(float)
    pv: dict[int, float] = defaultdict(float)
    readings = MeterReading.objects.filter(start__gte=since, start__lte=now, power_w__isnull=False,
                                           meter__role__in=(MeterRole.ZONE_TOTAL, MeterRole.PV),
                                           meter__zone__parent__isnull=True)
    for role, start, power_w in readings.values_list("meter__role", "start", "power_w"):
        (pv if role == MeterRole.PV else building)[_minute(start)] += power_w / 1000.0
    minutes = sorted(set(ev) | set(building) | set(pv) | set(range(_minute(since) + 60, _minute(now) + 1, 300)))
    limits = site_limit_kw(minutes)
    return {
        "t": minutes,
        "ev_kw": [round(ev[m], 3) if m in ev else None for m in minutes],  # grid points only carry the limit
        "site_kw": [round(building[m], 3) if m in building else None for m in minutes],
        "pv_kw": [round(pv[m], 3) if m in pv else None for m in minutes],
        "limit_kw": limits,
    }


def site_limit_kw(minutes: list[int]) -> list[float | None]:
    """The connection point's limit at each minute, with its time-of-use steps (kW; a current
    limit counts as three phases at the nominal voltage). None when the site has no zone."""
    from loadmgmt.capacity import time_of_use_limits  # noqa: PLC0415 - pure rules of the loop
    from loadmgmt.inputs import zone_config  # noqa: PLC0415

    site = SiteSettings.load()
    roots = [zone_config(zone, site) for zone in Zone.objects.filter(parent__isnull=True).prefetch_related(
        "time_of_use")]
    if not roots:
        return [None for _ in minutes]
    limits: list[float | None] = []
    for minute in minutes:
        local = timezone.localtime(dt.datetime.fromtimestamp(minute, dt.UTC))
        total = 0.0
        for config in roots:
            current_a, power_w, _ = time_of_use_limits(config, local)
            three_phase_w = None if current_a is None else current_a * 3 * VOLTAGE_V
            candidates = [value for value in (power_w, three_phase_w) if value is not None]
            total += min(candidates) / 1000.0 if candidates else 0.0
        limits.append(round(total, 3))
    return limits


@roles.requires(roles.VIEW)
def energy(request: HttpRequest) -> JsonResponse:
    """Energy per day or month of the sessions the filters select (they count on their start day)."""
    rows, _, _ = _filtered(request)
    kind = "month" if request.GET.get("kind") == "month" else "day"
    totals = site_aggregate(kind, rows)
    starts = [_period_start(row[kind], kind) for row in totals]
    return JsonResponse({"t": starts, "labels": [row[kind] for row in totals],
                         "energy_kwh": [row["energy_kwh"] for row in totals]})


def _period_start(label: str, kind: str) -> int:
    day = dt.date.fromisoformat(label if kind == "day" else f"{label}-01")
    return int(timezone.make_aware(dt.datetime.combine(day, dt.time.min)).timestamp())
