"""Backend charging profiles as caps on the local allocation.

The local loop stays the only writer of a charger's profiles: a backend's SetChargingProfile is
stored (proxy.models.UpstreamProfile) and its limit at a given moment caps the session's current
(`upstream_limits_a`, read by loadmgmt.inputs). The schedule rules follow OCPP 1.6 §3.13: within a
purpose the valid profile with the highest stack level wins; a TxProfile (for its transaction)
overrides TxDefault (connector-specific before connector 0); ChargePointMax caps everything, and
caps the charger as a whole: the sum of its connectors (the loop gives it a zone of its own).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.utils.dateparse import parse_datetime

from loadmgmt.profiles import VOLTAGE_V

DAY = dt.timedelta(days=1)
WEEK = dt.timedelta(days=7)
TX = "TxProfile"
TX_DEFAULT = "TxDefaultProfile"
MAX = "ChargePointMaxProfile"


@dataclass(frozen=True)
class StoredProfile:
    connector_id: int
    purpose: str
    stack_level: int
    transaction_id: int | None
    profile: dict[str, Any]  # csChargingProfiles, camelCase


def _time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    parsed = parse_datetime(value)
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def schedule_start(profile: dict[str, Any], at: dt.datetime, tx_start: dt.datetime | None) -> dt.datetime | None:
    """When the schedule in force at `at` started (the latest recurrence for a recurring one)."""
    schedule = profile.get("chargingSchedule") or {}
    kind = profile.get("chargingProfileKind")
    start = _time(schedule.get("startSchedule"))
    if kind == "Relative":
        return tx_start or at
    if kind == "Recurring":
        step = WEEK if profile.get("recurrencyKind") == "Weekly" else DAY
        base = start or _time(profile.get("validFrom")) or at.replace(hour=0, minute=0, second=0, microsecond=0)
        return base + step * math.floor((at - base) / step)
    return start or _time(profile.get("validFrom")) or at


def limit_at(profile: dict[str, Any], at: dt.datetime, tx_start: dt.datetime | None = None
             ) -> tuple[float, str, int] | None:
    """(limit, unit, numberPhases) the profile sets at `at`, or None when it sets nothing then."""
    valid_from, valid_to = _time(profile.get("validFrom")), _time(profile.get("validTo"))
    if (valid_from is not None and at < valid_from) or (valid_to is not None and at >= valid_to):
        return None
    start = schedule_start(profile, at, tx_start)
    if start is None:
        return None
    schedule = profile.get("chargingSchedule") or {}
    offset = (at - start).total_seconds()
    duration = schedule.get("duration")
    if offset < 0 or (duration is not None and offset >= float(duration)):
        return None
    found = None
    for period in sorted(schedule.get("chargingSchedulePeriod") or [], key=lambda p: p.get("startPeriod", 0)):
        if float(period.get("startPeriod", 0)) <= offset:
            found = period
    if found is None:
        return None
    return float(found["limit"]), str(schedule.get("chargingRateUnit", "A")), int(found.get("numberPhases") or 3)


def to_amps(limit: float, unit: str, charger_phases: int) -> float:
    """Amps per phase: a W limit over the charger's phases at nominal voltage (DOMAIN.md)."""
    if unit == "W":
        return limit / (VOLTAGE_V * max(1, charger_phases))
    return limit


def _top(profiles: Iterable[StoredProfile], at: dt.datetime, tx_start: dt.datetime | None,
         phases: int) -> float | None:
    """The limit of the highest stack level that sets one at `at` (OCPP 1.6 §3.13.2)."""
    for stored in sorted(profiles, key=lambda p: -p.stack_level):
        found = limit_at(stored.profile, at, tx_start)
        if found is not None:
            return to_amps(found[0], found[1], phases)
    return None


def connector_limit_a(profiles: list[StoredProfile], connector_id: int, at: dt.datetime, *, phases: int,
                      transaction_id: int | None = None, tx_start: dt.datetime | None = None) -> float | None:
    """One backend's composite limit for a connector at `at` (amps per phase), None when unlimited.

    Connector 0: the charge point as a whole (ChargePointMax and TxDefault on connector 0).
    """
    maximum = _top((p for p in profiles if p.purpose == MAX and p.connector_id == 0), at, tx_start, phases)
    tx = None
    if connector_id > 0 and transaction_id is not None:
        tx = _top((p for p in profiles if p.purpose == TX and p.connector_id == connector_id
                   and p.transaction_id == transaction_id), at, tx_start, phases)
    default = None
    if tx is None:
        own = [p for p in profiles if p.purpose == TX_DEFAULT and p.connector_id == connector_id and connector_id > 0]
        default = _top(own, at, tx_start, phases)
        if default is None:
            default = _top((p for p in profiles if p.purpose == TX_DEFAULT and p.connector_id == 0), at, tx_start,
                           phases)
    limits = [value for value in (maximum, tx, default) if value is not None]
    return min(limits) if limits else None


def breakpoints(profiles: list[StoredProfile], since: dt.datetime, until: dt.datetime,
                tx_start: dt.datetime | None) -> list[dt.datetime]:
    """Moments in [since, until) where some profile's limit may change, sorted."""
    moments = {since}
    for stored in profiles:
        profile = stored.profile
        for edge in (_time(profile.get("validFrom")), _time(profile.get("validTo"))):
            if edge is not None and since < edge < until:
                moments.add(edge)
        schedule = profile.get("chargingSchedule") or {}
        offsets = [float(p.get("startPeriod", 0)) for p in schedule.get("chargingSchedulePeriod") or []]
        if schedule.get("duration") is not None:
            offsets.append(float(schedule["duration"]))
        at = since
        for _ in range(16):  # recurrences inside the window (a day or a week each)
            start = schedule_start(profile, at, tx_start)
            if start is None:
                break
            for offset in offsets:
                moment = start + dt.timedelta(seconds=offset)
                if since < moment < until:
                    moments.add(moment)
            if profile.get("chargingProfileKind") != "Recurring":
                break
            at = start + (WEEK if profile.get("recurrencyKind") == "Weekly" else DAY)
            if at >= until:
                break
    return sorted(moments)


def composite_periods(profile_sets: list[list[StoredProfile]], connector_id: int, since: dt.datetime,
                      duration_s: int, *, phases: int, local_a: float, transaction_id: int | None = None,
                      tx_start: dt.datetime | None = None) -> list[tuple[int, float]]:
    """(startPeriod s, amps) of min(local limit, every backend's composite) over the duration."""
    until = since + dt.timedelta(seconds=duration_s)
    moments = sorted({m for profiles in profile_sets for m in breakpoints(profiles, since, until, tx_start)} | {since})
    periods: list[tuple[int, float]] = []
    for moment in moments:
        limit = local_a
        for profiles in profile_sets:
            value = connector_limit_a(profiles, connector_id, moment, phases=phases, transaction_id=transaction_id,
                                      tx_start=tx_start)
            if value is not None:
                limit = min(limit, value)
        limit = math.floor(limit * 10) / 10
        if not periods or periods[-1][1] != limit:
            periods.append((int((moment - since).total_seconds()), limit))
    return periods


@dataclass(frozen=True)
class UpstreamCaps:
    """The backends' limits at one moment, in amps per phase (the lowest of all backends)."""

    # (charger pk, connector id) of a running session → its composite (TxProfile, else TxDefault,
    # under ChargePointMax); (charger pk, 0) → what a connector without a session may take
    # (TxDefault on connector 0, under ChargePointMax).
    connectors: dict[tuple[int, int], float] = field(default_factory=dict)
    # charger pk → its ChargePointMaxProfile: the charge point as a whole, all connectors together
    # (OCPP 1.6 §3.13.2).
    charger_max: dict[int, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.connectors or self.charger_max)


def upstream_limits_a(now: dt.datetime) -> UpstreamCaps:
    """The backends' caps at `now` on the chargers they are linked to.

    Links or backends that are disabled do not count; profiles waiting for a RemoteStart's
    transaction do not either.
    """
    from proxy.models import UpstreamProfile  # noqa: PLC0415
    from transactions.models import Transaction, TransactionState  # noqa: PLC0415

    rows = list(UpstreamProfile.objects.filter(link__enabled=True, link__backend__enabled=True, awaiting_id_tag="")
                .values("link_id", "link__charger_id", "link__charger__phases", "connector_id", "purpose",
                        "stack_level", "transaction_id", "profile"))
    if not rows:
        return UpstreamCaps()
    per_link: dict[tuple[int, int], list[StoredProfile]] = defaultdict(list)
    phases: dict[int, int] = {}
    for row in rows:
        charger_pk = row["link__charger_id"]
        phases[charger_pk] = int(row["link__charger__phases"] or 3)
        per_link[(charger_pk, row["link_id"])].append(StoredProfile(
            connector_id=row["connector_id"], purpose=row["purpose"], stack_level=row["stack_level"],
            transaction_id=row["transaction_id"], profile=row["profile"]))
    sessions: dict[int, list[tuple[int, int, dt.datetime | None]]] = defaultdict(list)
    for pk, charger_pk, connector_id, start in Transaction.objects.filter(
            state=TransactionState.ACTIVE, charger_id__among=list(phases)).values_list(
            "pk", "charger_id", "connector_id", "start_time"):
        sessions[charger_pk].append((connector_id, pk, start))
    caps = UpstreamCaps()
    for (charger_pk, _), profiles in per_link.items():
        whole = _top((p for p in profiles if p.purpose == MAX and p.connector_id == 0), now, None, phases[charger_pk])
        if whole is not None:
            caps.charger_max[charger_pk] = min(whole, caps.charger_max.get(charger_pk, math.inf))
        targets = [(0, None, None), *sessions.get(charger_pk, [])]
        for connector_id, transaction_id, start in targets:
            value = connector_limit_a(profiles, connector_id, now, phases=phases[charger_pk],
                                      transaction_id=transaction_id, tx_start=start)
            if value is None:
                continue
            key = (charger_pk, connector_id)
            caps.connectors[key] = min(value, caps.connectors.get(key, math.inf))
    return caps
