"""The Modbus TCP register map for BMS/PLCs: what each address holds, and how writes act.

Everything here is synchronous Django code run off the server's event loop: ``build_image``
turns the site's state into register values; ``apply_write`` turns a PLC's write into the same
service calls the REST API makes (``api.services``), under one integration (settings
``BEMS_MODBUS_INTEGRATION``) whose heartbeat interval, failsafe limit and minimum apply.

Encoding: holding registers (function 3; function 4 reads the same), 0-based wire addresses;
float32 big-endian, high word first (as Schneider meters), NaN = unknown / none; uint16 and
uint32 (high word first) for counts and times.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from dataclasses import dataclass

from django.conf import settings

from api import selectors, services, watchdog
from api.models import Integration, Scope, ZoneControl
from chargers.models import Charger
from loadmgmt.models import Zone

MAP_VERSION = 1
ZONE_BASE = 100
ZONE_STRIDE = 50
MAX_ZONES = 200
LAST_ADDRESS = ZONE_BASE + ZONE_STRIDE * MAX_ZONES - 1

# Site block.
REG_MAP_VERSION = 0
REG_ZONE_COUNT = 1
REG_ACTIVE_SESSIONS = 2
REG_CHARGERS_CONNECTED = 3
REG_SERVER_TIME = 4  # uint32, 2 registers
REG_WRITABLE = 6
REG_WATCHDOG = 8  # R/W uint16: writing any value is a heartbeat of the Modbus integration
REG_HEARTBEAT_INTERVAL = 9  # uint16 s, read only
REG_SITE_POWER_KW = 10
REG_SITE_CURRENT_A = 12  # L1, L2, L3: 12, 14, 16
REG_SITE_EV_CURRENT_A = 18  # 18, 20, 22
REG_SITE_HEADROOM_A = 24
REG_SITE_HEADROOM_KW = 26

# Zone block: ZONE_BASE + ZONE_STRIDE × index (zones in id order) + offset.
OFF_ZONE_ID = 0
OFF_SOURCE = 1  # 0 configured, 1 setpoint, 2 failsafe, 3 expired
OFF_MAX_CURRENT_A = 2
OFF_MAX_POWER_KW = 4
OFF_LIMIT_CURRENT_A = 6
OFF_LIMIT_POWER_KW = 8
OFF_CURRENT_A = 10  # 10, 12, 14
OFF_POWER_KW = 16
OFF_EV_CURRENT_A = 18  # 18, 20, 22
OFF_HEADROOM_A = 24
OFF_HEADROOM_KW = 26
OFF_SESSIONS = 28
OFF_MEASUREMENT_AGE_S = 29
OFF_BUDGET_CURRENT_A = 30
OFF_BUDGET_POWER_KW = 32
OFF_SET_POWER_KW = 40  # R/W float32: zone power limit written by the PLC (NaN: give the zone back)
OFF_SET_CURRENT_A = 42  # R/W float32: zone current limit per phase

SOURCES = {watchdog.CONFIGURED: 0, watchdog.SETPOINT: 1, watchdog.FAILSAFE: 2, watchdog.EXPIRED: 3}
NAN = float("nan")


def float_words(value: float | None) -> tuple[int, int]:
    packed = struct.pack(">f", NAN if value is None else value)
    high, low = struct.unpack(">HH", packed)
    return high, low


def words_float(high: int, low: int) -> float:
    return float(struct.unpack(">f", struct.pack(">HH", high, low))[0])


def _put_float(image: dict[int, int], address: int, value: float | None) -> None:
    image[address], image[address + 1] = float_words(value)


def _put_u16(image: dict[int, int], address: int, value: int) -> None:
    image[address] = max(0, min(0xFFFF, value))


def modbus_integration() -> Integration:
    """The integration Modbus writes act as (created on first use, editable in the admin)."""
    integration = Integration.objects.filter(name=settings.BEMS_MODBUS_INTEGRATION).first()
    if integration is None:
        integration = Integration(name=settings.BEMS_MODBUS_INTEGRATION, scope=Scope.SETPOINTS)
        integration.issue_token()  # never shown: Modbus has no tokens, the record needs one
        integration.save()
    return integration


def _sum(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def build_image(now: dt.datetime, watchdog_value: int = 0) -> dict[int, int]:
    """All register values at ``now`` (addresses not in the result read as 0)."""
    image: dict[int, int] = {}
    statuses = selectors.zone_statuses(now)[:MAX_ZONES]
    integration = modbus_integration()
    own = {c.zone_id: c for c in ZoneControl.objects.filter(integration=integration)}
    sessions_per_zone = selectors.active_sessions_per_zone()
    roots = [st for st in statuses if st.zone.parent_id is None]
    _put_u16(image, REG_MAP_VERSION, MAP_VERSION)
    _put_u16(image, REG_ZONE_COUNT, len(statuses))
    _put_u16(image, REG_ACTIVE_SESSIONS, sum(sessions_per_zone.values()))
    _put_u16(image, REG_CHARGERS_CONNECTED, Charger.objects.filter(connected=True).count())
    seconds = int(now.timestamp()) & 0xFFFFFFFF
    image[REG_SERVER_TIME], image[REG_SERVER_TIME + 1] = seconds >> 16, seconds & 0xFFFF
    _put_u16(image, REG_WRITABLE, int(settings.BEMS_MODBUS_WRITABLE))
    _put_u16(image, REG_WATCHDOG, watchdog_value)
    _put_u16(image, REG_HEARTBEAT_INTERVAL, integration.heartbeat_interval_s)
    _put_float(image, REG_SITE_POWER_KW, _sum([st.measured_power_kw for st in roots]))
    for phase in range(3):
        _put_float(image, REG_SITE_CURRENT_A + 2 * phase, _sum([st.measured_current_a[phase] for st in roots]))
        _put_float(image, REG_SITE_EV_CURRENT_A + 2 * phase,
                   _sum([st.ev_current_a[phase] for st in statuses if st.ev_current_a is not None]))
    headrooms_a = [st.headroom_a for st in roots if st.headroom_a is not None]
    headrooms_kw = [st.headroom_kw for st in roots if st.headroom_kw is not None]
    _put_float(image, REG_SITE_HEADROOM_A, min(headrooms_a) if headrooms_a else None)
    _put_float(image, REG_SITE_HEADROOM_KW, min(headrooms_kw) if headrooms_kw else None)
    for index, st in enumerate(statuses):
        base = ZONE_BASE + ZONE_STRIDE * index
        zone = st.zone
        _put_u16(image, base + OFF_ZONE_ID, zone.pk)
        _put_u16(image, base + OFF_SOURCE, SOURCES[st.control.source])
        _put_float(image, base + OFF_MAX_CURRENT_A, zone.max_current_a)
        _put_float(image, base + OFF_MAX_POWER_KW, zone.max_power_kw)
        _put_float(image, base + OFF_LIMIT_CURRENT_A, st.limit_current_a)
        _put_float(image, base + OFF_LIMIT_POWER_KW, st.limit_power_kw)
        for phase in range(3):
            _put_float(image, base + OFF_CURRENT_A + 2 * phase, st.measured_current_a[phase])
            _put_float(image, base + OFF_EV_CURRENT_A + 2 * phase,
                       None if st.ev_current_a is None else st.ev_current_a[phase])
        _put_float(image, base + OFF_POWER_KW, st.measured_power_kw)
        _put_float(image, base + OFF_HEADROOM_A, st.headroom_a)
        _put_float(image, base + OFF_HEADROOM_KW, st.headroom_kw)
        _put_u16(image, base + OFF_SESSIONS, sessions_per_zone.get(zone.pk, 0))
        age = 0xFFFF if st.measured_at is None else int((now - st.measured_at).total_seconds())
        _put_u16(image, base + OFF_MEASUREMENT_AGE_S, age)
        _put_float(image, base + OFF_BUDGET_CURRENT_A, st.control.current_a)
        _put_float(image, base + OFF_BUDGET_POWER_KW, st.control.power_kw)
        control = own.get(zone.pk)
        _put_float(image, base + OFF_SET_POWER_KW, control.power_kw if control else None)
        _put_float(image, base + OFF_SET_CURRENT_A, control.current_a if control else None)
    return image


class WriteRefused(Exception):
    """A write the map cannot take; ``code`` is the Modbus exception code to answer."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3
DEVICE_FAILURE = 4


@dataclass(frozen=True)
class ZoneWrite:
    zone_index: int
    offset: int
    value: float


def parse_write(address: int, values: list[int]) -> ZoneWrite | int:
    """A write as the map understands it: the watchdog (an int) or a zone limit (both words)."""
    if address == REG_WATCHDOG and len(values) == 1:
        return values[0]
    if address < ZONE_BASE or address > LAST_ADDRESS:
        raise WriteRefused(ILLEGAL_ADDRESS, f"register {address} is not writable")
    index, offset = divmod(address - ZONE_BASE, ZONE_STRIDE)
    if offset not in (OFF_SET_POWER_KW, OFF_SET_CURRENT_A) or len(values) != 2:
        raise WriteRefused(ILLEGAL_ADDRESS, "write a zone limit as both registers of its float32, or the watchdog")
    return ZoneWrite(index, offset, words_float(values[0], values[1]))


def apply_write(write: ZoneWrite | int, now: dt.datetime) -> None:
    """Act on a PLC's write: a heartbeat, a zone limit (expiring), or a release (NaN)."""
    integration = modbus_integration()
    if isinstance(write, int):
        services.integration_heartbeat(integration=integration, now=now)
        return
    zones = list(Zone.objects.order_by("pk")[write.zone_index: write.zone_index + 1])
    if not zones:
        raise WriteRefused(ILLEGAL_ADDRESS, f"no zone at index {write.zone_index}")
    zone = zones[0]
    try:
        if math.isnan(write.value):
            services.zone_setpoint_release(integration=integration, zone=zone, now=now)
            return
        if not 0 <= write.value <= 100_000:
            raise WriteRefused(ILLEGAL_VALUE, f"limit {write.value} out of range")
        control = ZoneControl.objects.filter(zone=zone, integration=integration).first()
        current = control.current_a if control else None
        power = control.power_kw if control else None
        if write.offset == OFF_SET_POWER_KW:
            power = write.value
        else:
            current = write.value
        until = now + dt.timedelta(seconds=settings.BEMS_MODBUS_SETPOINT_S)
        services.zone_setpoint_write(integration=integration, zone=zone, current_a=current, power_kw=power,
                                     valid_until=until, now=now)
    except services.SetpointConflict as error:
        raise WriteRefused(DEVICE_FAILURE, str(error)) from None
