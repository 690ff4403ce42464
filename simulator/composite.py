"""Installed OCPP 1.6 charging profiles of one charge point and its composite limit (pure).

This is what a real charge point does with the SetChargingProfile requests it accepted
(OCPP 1.6 edition 2, §3.13 "Smart Charging", §5.16, §7.8-7.14), written so that a test can
ask "what may this connector draw at time t" without a network or Django:

- **ChargePointMaxProfile** (connector 0 only) caps the whole charge point; with several
  connectors its limit is shared by all of them (§3.13.3), see :func:`share_charge_point_max`.
- **TxProfile** (connector > 0, only while a transaction runs there, only for that
  transaction) overrides the TxDefaultProfile and is deleted when the transaction ends.
- **TxDefaultProfile** on connector 0 applies to every connector, unless a TxDefaultProfile
  is installed for that connector itself (§3.13.1 "replaced only for that specific connector").
- Within one purpose, the profile with the highest stackLevel that is valid and inside its
  schedule at t prevails (§3.13.2); a profile with a duration falls back to lower levels
  when it runs out. Same purpose + stackLevel on the same connector, or the same
  chargingProfileId, replaces the installed profile.
- The composite is the minimum of the prevailing ChargePointMax and Tx/TxDefault limits.
- ``chargingRateUnit`` A is per phase; W is the total, converted to amps per phase with
  W / (230 V × phases in use) (§7.12), which is why a single-phase car behind a W profile
  computed for three phases draws three times the intended current on its one phase.

Validation is that of a strict real charger: see :meth:`ProfileStore.check`.
Times are timezone-aware datetimes; limits are floats; ``None`` means "no limit".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

CHARGE_POINT_MAX: Final = "ChargePointMaxProfile"
TX_DEFAULT: Final = "TxDefaultProfile"
TX: Final = "TxProfile"
PURPOSES: Final = (CHARGE_POINT_MAX, TX_DEFAULT, TX)

ABSOLUTE: Final = "Absolute"
RECURRING: Final = "Recurring"
RELATIVE: Final = "Relative"
KINDS: Final = (ABSOLUTE, RECURRING, RELATIVE)

DAILY_S: Final = 86_400
WEEKLY_S: Final = 7 * DAILY_S
RECURRENCY_S: Final[Mapping[str, int]] = {"Daily": DAILY_S, "Weekly": WEEKLY_S}

VOLTAGE_V: Final = 230.0  # nominal phase voltage of §7.12 ("the set voltage for the area")
DEFAULT_PHASES: Final = 3  # §7.14: numberPhases absent means 3

ACCEPTED: Final = "Accepted"
REJECTED: Final = "Rejected"


def _get(payload: Mapping[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    """Read a field whether the payload is wire JSON (camelCase) or ocpp-library kwargs (snake)."""
    if camel in payload:
        return payload[camel]
    return payload.get(snake, default)


def _parse_time(value: Any) -> dt.datetime | None:
    """ISO 8601 text or datetime → aware datetime (naive means UTC, as OCPP recommends UTC)."""
    if value is None:
        return None
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class SchedulePeriod:
    """One ChargingSchedulePeriod (§7.14): from ``start_s`` into the schedule, at most ``limit``."""

    start_s: int
    limit: float
    number_phases: int | None = None


@dataclass(frozen=True)
class ChargingProfile:
    """A ChargingProfile (§7.8) with its ChargingSchedule (§7.13) flattened in."""

    profile_id: int
    stack_level: int
    purpose: str
    kind: str
    rate_unit: str
    periods: tuple[SchedulePeriod, ...]
    transaction_id: int | None = None
    recurrency: str | None = None
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None
    start_schedule: dt.datetime | None = None
    duration_s: int | None = None

    @classmethod
    def from_ocpp(cls, payload: Mapping[str, Any]) -> ChargingProfile:
        """Build from ``csChargingProfiles`` as sent on the wire or as the ocpp library hands it over."""
        schedule = _get(payload, "chargingSchedule", "charging_schedule")
        periods = tuple(
            SchedulePeriod(
                start_s=int(_get(period, "startPeriod", "start_period")),
                limit=float(period["limit"]),
                number_phases=_get(period, "numberPhases", "number_phases"),
            )
            for period in _get(schedule, "chargingSchedulePeriod", "charging_schedule_period")
        )
        return cls(
            profile_id=int(_get(payload, "chargingProfileId", "charging_profile_id")),
            stack_level=int(_get(payload, "stackLevel", "stack_level")),
            purpose=str(_get(payload, "chargingProfilePurpose", "charging_profile_purpose")),
            kind=str(_get(payload, "chargingProfileKind", "charging_profile_kind")),
            rate_unit=str(_get(schedule, "chargingRateUnit", "charging_rate_unit")),
            periods=periods,
            transaction_id=_get(payload, "transactionId", "transaction_id"),
            recurrency=_get(payload, "recurrencyKind", "recurrency_kind"),
            valid_from=_parse_time(_get(payload, "validFrom", "valid_from")),
            valid_to=_parse_time(_get(payload, "validTo", "valid_to")),
            start_schedule=_parse_time(_get(schedule, "startSchedule", "start_schedule")),
            duration_s=_get(schedule, "duration", "duration"),
        )

    def is_valid_at(self, t: dt.datetime) -> bool:
        """Inside validFrom..validTo (absent bounds are open)."""
        return (self.valid_from is None or self.valid_from <= t) and (self.valid_to is None or t < self.valid_to)

    def schedule_start(self, t: dt.datetime, relative_start: dt.datetime | None) -> dt.datetime | None:
        """Start of the schedule occurrence that covers ``t`` (None: not started yet).

        Relative schedules start at the transaction start when there is one, else "now": a
        connector without a transaction is not charging, so any offset is as good as zero.
        """
        if self.kind == RELATIVE or self.start_schedule is None:
            return relative_start or t
        if self.kind == RECURRING:
            if t < self.start_schedule:
                return None
            period = RECURRENCY_S.get(self.recurrency or "Daily", DAILY_S)
            elapsed = (t - self.start_schedule).total_seconds()
            return self.start_schedule + dt.timedelta(seconds=elapsed - elapsed % period)
        return self.start_schedule if t >= self.start_schedule else None

    def period_at(self, t: dt.datetime, relative_start: dt.datetime | None = None) -> SchedulePeriod | None:
        """The schedule period in force at ``t``; None outside validity or the schedule's span."""
        if not self.is_valid_at(t):
            return None
        start = self.schedule_start(t, relative_start)
        if start is None:
            return None
        offset = (t - start).total_seconds()
        if self.duration_s is not None and offset >= self.duration_s:
            return None
        current: SchedulePeriod | None = None
        for period in self.periods:
            if period.start_s <= offset:
                current = period
        return current

    def boundaries_after(self, t: dt.datetime, relative_start: dt.datetime | None) -> list[dt.datetime]:
        """Times after ``t`` at which this profile's contribution may change (for caching)."""
        found = [moment for moment in (self.valid_from, self.valid_to) if moment is not None and moment > t]
        start = self.schedule_start(t, relative_start)
        if start is None and self.start_schedule is not None:
            found.append(self.start_schedule)
        if start is not None:
            offsets = [float(period.start_s) for period in self.periods]
            if self.duration_s is not None:
                offsets.append(float(self.duration_s))
            if self.kind == RECURRING:
                offsets.append(float(RECURRENCY_S.get(self.recurrency or "Daily", DAILY_S)))
            found.extend(start + dt.timedelta(seconds=o) for o in offsets if start + dt.timedelta(seconds=o) > t)
        return found


def limit_per_phase_a(limit: float, rate_unit: str, phases_in_use: int) -> float:
    """Amps per phase of a schedule limit: A as is, W / (230 V × phases in use) (§7.12)."""
    if rate_unit == "W":
        return limit / (VOLTAGE_V * max(1, phases_in_use))
    return limit


@dataclass(frozen=True)
class CompositeLimit:
    """A connector's composite limit at one instant, with where it came from.

    ``limit_a`` is amps per phase on the phases in use (None: no profile limits it);
    ``valid_until`` is the next instant at which it may change by itself (schedule period,
    duration, validity), None when it never does; profile ids say who set it.
    """

    limit_a: float | None
    charge_point_max_a: float | None
    tx_limit_a: float | None
    tx_purpose: str | None
    profile_ids: tuple[int, ...]
    valid_until: dt.datetime | None


@dataclass
class InstalledProfile:
    """A profile as held by the charger: on which connector, and since when."""

    connector_id: int
    profile: ChargingProfile
    installed_at: dt.datetime


@dataclass
class ProfileLimits:
    """What a strict charger accepts (its smart-charging configuration keys, §3.13.5, §9.4)."""

    number_of_connectors: int = 1
    max_stack_level: int = 8
    allowed_units: tuple[str, ...] = ("A", "W")
    max_periods: int = 24
    max_installed: int = 32

    @staticmethod
    def units_from_key(value: str) -> tuple[str, ...]:
        """``ChargingScheduleAllowedChargingRateUnit`` ("Current", "Power", "Current,Power") → units."""
        names = {part.strip().lower() for part in value.split(",")}
        return tuple(unit for unit, name in (("A", "current"), ("W", "power")) if name in names)


@dataclass
class ProfileStore:
    """The profiles installed in one charge point, per connector (0 = whole charge point)."""

    limits: ProfileLimits = field(default_factory=ProfileLimits)
    installed: list[InstalledProfile] = field(default_factory=list)

    def check(self, connector_id: int, profile: ChargingProfile, transaction_id: int | None) -> str | None:
        """Why a strict charger refuses this profile (None: acceptable).

        ``transaction_id`` is the transaction running on ``connector_id`` (None: no transaction).
        """
        problems = [
            (profile.purpose not in PURPOSES, f"unknown purpose {profile.purpose}"),
            (profile.kind not in KINDS, f"unknown kind {profile.kind}"),
            (not 0 <= connector_id <= self.limits.number_of_connectors, f"no connector {connector_id}"),
            (profile.purpose == CHARGE_POINT_MAX and connector_id != 0, "ChargePointMaxProfile only on connector 0"),
            (profile.purpose == TX and connector_id == 0, "TxProfile on connector 0"),
            (profile.purpose == TX and connector_id > 0 and transaction_id is None,
             f"TxProfile without a transaction on connector {connector_id}"),
            (profile.purpose == TX and None not in (profile.transaction_id, transaction_id)
             and profile.transaction_id != transaction_id,
             f"TxProfile for transaction {profile.transaction_id}, running is {transaction_id}"),
            (profile.purpose != TX and profile.transaction_id is not None, "transactionId outside a TxProfile"),
            (not 0 <= profile.stack_level <= self.limits.max_stack_level,
             f"stackLevel {profile.stack_level} above ChargeProfileMaxStackLevel {self.limits.max_stack_level}"),
            (profile.rate_unit not in self.limits.allowed_units, f"chargingRateUnit {profile.rate_unit} not allowed"),
            (not profile.periods or profile.periods[0].start_s != 0, "first startPeriod must be 0"),
            (any(b.start_s <= a.start_s for a, b in zip(profile.periods, profile.periods[1:], strict=False)),
             "startPeriod not increasing"),
            (len(profile.periods) > self.limits.max_periods, "more periods than ChargingScheduleMaxPeriods"),
            (any(p.limit < 0 for p in profile.periods), "negative limit"),
            (profile.kind in (ABSOLUTE, RECURRING) and profile.start_schedule is None,
             f"{profile.kind} schedule without startSchedule"),
            (profile.kind == RECURRING and profile.recurrency not in RECURRENCY_S, "Recurring without recurrencyKind"),
        ]
        for failed, reason in problems:
            if failed:
                return reason
        kept = [p for p in self.installed if not self._replaced_by(p, connector_id, profile)]
        if len(kept) >= self.limits.max_installed:
            return "MaxChargingProfilesInstalled reached"
        return None

    @staticmethod
    def _replaced_by(old: InstalledProfile, connector_id: int, new: ChargingProfile) -> bool:
        """Same chargingProfileId anywhere, or same purpose + stackLevel on the same connector."""
        same_slot = (
            old.connector_id == connector_id
            and old.profile.purpose == new.purpose
            and old.profile.stack_level == new.stack_level
        )
        return old.profile.profile_id == new.profile_id or same_slot

    def install(
        self, connector_id: int, profile: ChargingProfile, *, transaction_id: int | None, now: dt.datetime
    ) -> tuple[str, str | None]:
        """Apply a SetChargingProfile: (status, reason of a rejection)."""
        reason = self.check(connector_id, profile, transaction_id)
        if reason is not None:
            return REJECTED, reason
        if profile.purpose == TX and profile.transaction_id is None:
            # Bind it to the running transaction so that it dies with it.
            profile = _with_transaction(profile, transaction_id)
        self.installed = [p for p in self.installed if not self._replaced_by(p, connector_id, profile)]
        self.installed.append(InstalledProfile(connector_id, profile, now))
        return ACCEPTED, None

    def clear(
        self,
        *,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
    ) -> int:
        """ClearChargingProfile (§5.5): remove matching profiles; how many were removed.

        An id matches on its own; otherwise every given criterion must match.
        """
        def matches(item: InstalledProfile) -> bool:
            if profile_id is not None:
                return item.profile.profile_id == profile_id
            return (
                (connector_id is None or item.connector_id == connector_id)
                and (purpose is None or item.profile.purpose == purpose)
                and (stack_level is None or item.profile.stack_level == stack_level)
            )

        before = len(self.installed)
        self.installed = [item for item in self.installed if not matches(item)]
        return before - len(self.installed)

    def end_transaction(self, connector_id: int) -> int:
        """The transaction on ``connector_id`` ended: its TxProfiles go (§3.13.1, §7.10)."""
        return self.clear(connector_id=connector_id, purpose=TX)

    def profiles(self, connector_id: int, purpose: str) -> list[ChargingProfile]:
        """Installed profiles of ``purpose`` on exactly ``connector_id``."""
        return [p.profile for p in self.installed if p.connector_id == connector_id and p.profile.purpose == purpose]

    def composite(
        self,
        connector_id: int,
        t: dt.datetime,
        *,
        transaction_id: int | None = None,
        transaction_start: dt.datetime | None = None,
        phases_in_use: int | None = None,
    ) -> CompositeLimit:
        """The §3.13.3 composite limit of a connector at ``t``, in amps per phase.

        W limits are converted at min(``phases_in_use``, the period's numberPhases), both 3
        when absent. numberPhases does not switch phases otherwise (no
        ConnectorSwitch3to1PhaseSupported in this model). ``transaction_id`` selects the TxProfiles of the running
        transaction; ``transaction_start`` anchors Relative schedules.
        """
        cp_max = self.profiles(0, CHARGE_POINT_MAX)
        if transaction_id is not None:
            tx = [p for p in self.profiles(connector_id, TX) if p.transaction_id in (None, transaction_id)]
        else:
            tx = []
        defaults = self.profiles(connector_id, TX_DEFAULT) if connector_id > 0 else []
        if not defaults:
            defaults = self.profiles(0, TX_DEFAULT)

        cp_max_a, cp_max_id = _prevailing(cp_max, t, transaction_start, phases_in_use)
        tx_a, tx_id = _prevailing(tx, t, transaction_start, phases_in_use)
        tx_purpose: str | None = TX if tx_id is not None else None
        if tx_id is None:
            tx_a, tx_id = _prevailing(defaults, t, transaction_start, phases_in_use)
            tx_purpose = TX_DEFAULT if tx_id is not None else None
        limits = [limit for limit in (cp_max_a, tx_a) if limit is not None]
        boundaries = [b for p in (*cp_max, *tx, *defaults) for b in p.boundaries_after(t, transaction_start)]
        return CompositeLimit(
            limit_a=min(limits) if limits else None,
            charge_point_max_a=cp_max_a,
            tx_limit_a=tx_a,
            tx_purpose=tx_purpose,
            profile_ids=tuple(i for i in (cp_max_id, tx_id) if i is not None),
            valid_until=min(boundaries) if boundaries else None,
        )


def _with_transaction(profile: ChargingProfile, transaction_id: int | None) -> ChargingProfile:
    """Copy of ``profile`` bound to ``transaction_id``."""
    values = {name: getattr(profile, name) for name in profile.__dataclass_fields__}
    values["transaction_id"] = transaction_id
    return ChargingProfile(**values)


def _prevailing(
    profiles: Iterable[ChargingProfile], t: dt.datetime, relative_start: dt.datetime | None, phases_in_use: int | None
) -> tuple[float | None, int | None]:
    """(limit A per phase, profile id) of the highest stack level in force at ``t`` (§3.13.2)."""
    best: tuple[int, float, int] | None = None
    for profile in profiles:
        period = profile.period_at(t, relative_start)
        if period is None or (best is not None and profile.stack_level <= best[0]):
            continue
        # The charger uses at most the period's numberPhases, and only the phases the car draws on.
        phases = min(phases_in_use or DEFAULT_PHASES, period.number_phases or DEFAULT_PHASES)
        best = (profile.stack_level, limit_per_phase_a(period.limit, profile.rate_unit, phases), profile.profile_id)
    return (best[1], best[2]) if best is not None else (None, None)


def share_charge_point_max(
    connector_limits_a: Mapping[int, float | None], charge_point_max_a: float | None
) -> dict[int, float | None]:
    """Split a ChargePointMaxProfile between the connectors that charge (§3.13.3: combined cap).

    Connectors that need less than an equal share leave the rest to the others (water filling),
    as a charger balancing its own sockets would; ``None`` in the input means unlimited.
    """
    if charge_point_max_a is None or len(connector_limits_a) <= 1:
        return dict(connector_limits_a)
    remaining = charge_point_max_a
    pending = dict(connector_limits_a)
    result: dict[int, float | None] = {}
    while pending:
        share = remaining / len(pending)
        small = {c: v for c, v in pending.items() if v is not None and v <= share}
        if not small:
            result.update({c: share for c in pending})
            break
        for connector, value in small.items():
            result[connector] = value
            remaining -= value or 0.0
            del pending[connector]
    return result
