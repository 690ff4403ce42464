"""A busy site written straight into the database: what the dashboard tests and screenshots show.

Connection point 100 A (60 kW) → "Level -1" (static 63 A) and "Level -2" (dynamic 40 A, metered);
six chargers, four of them charging with fresh meter samples and the loop's live state in
every flavour (in force, pending, paused by shedding, rejected by the charger), one offline.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from badges.models import Badge
from chargers.models import Charger, Connector, RegistrationStatus
from evce import clock
from loadmgmt.models import AnswerStatus, LimitPurpose, LimitState, Setpoint, Zone, ZoneMode
from transactions.models import MeterSample, Transaction


@dataclass
class Site:
    root: Zone
    level1: Zone
    level2: Zone
    chargers: dict[str, Charger]
    sessions: dict[str, Transaction]


def _charging(charger: Charger, connector_id: int, tag: str, amps: float, now: dt.datetime,
              energy_wh: int) -> Transaction:
    tx = Transaction.objects.create(charger=charger, connector_id=connector_id, id_tag=tag,
                                    badge=Badge.objects.filter(id_tag=tag).first(),
                                    start_time=now - dt.timedelta(minutes=47), meter_start_wh=1000,
                                    energy_wh=energy_wh, last_sample_at=now - dt.timedelta(seconds=4))
    at = tx.last_sample_at
    samples = [MeterSample(charger=charger, connector_id=connector_id, transaction=tx, timestamp=at,
                           measurand="Current.Import", phase=phase, unit="A", value=amps, raw_value=str(amps))
               for phase in (["L1", "L2", "L3"] if charger.phases == 3 else ["L1"])]
    power = amps * 230 * charger.phases
    samples.append(MeterSample(charger=charger, connector_id=connector_id, transaction=tx, timestamp=at,
                               measurand="Power.Active.Import", unit="W", value=power, raw_value=str(power)))
    for minutes in range(45, 0, -5):  # a curve for the session page and the site chart
        earlier = at - dt.timedelta(minutes=minutes)
        samples.append(MeterSample(charger=charger, connector_id=connector_id, transaction=tx, timestamp=earlier,
                                   measurand="Power.Active.Import", unit="W", value=power * (0.6 + minutes / 100),
                                   raw_value="x"))
    MeterSample.objects.bulk_create(samples)
    Connector.objects.update_or_create(charger=charger, connector_id=connector_id,
                                       defaults={"status": "Charging", "error_code": "NoError", "status_at": now})
    return tx


def busy_site() -> Site:
    now = clock.now()
    root = Zone.objects.create(name="Connection point", max_current_a=100, max_power_kw=60)
    level1 = Zone.objects.create(name="Level -1", parent=root, max_current_a=63)
    level2 = Zone.objects.create(name="Level -2", parent=root, max_current_a=40, mode=ZoneMode.DYNAMIC,
                                 measured_current_l1_a=30, measured_current_l2_a=22, measured_current_l3_a=25,
                                 measured_power_kw=17, measured_at=now - dt.timedelta(seconds=2))
    Badge.objects.create(id_tag="ALICE", holder="Alice Martin", vip=True)
    Badge.objects.create(id_tag="BOB", holder="Bob Durand")
    chargers = {}
    for index, (cp_id, zone, phases) in enumerate([("CP-001", level1, 3), ("CP-002", level1, 3),
                                                   ("CP-003", level2, 3), ("CP-004", level2, 1),
                                                   ("CP-005", level1, 3), ("CP-006", level2, 3)]):
        chargers[cp_id] = Charger.objects.create(
            charge_point_id=cp_id, registration_status=RegistrationStatus.ACCEPTED, zone=zone, phases=phases,
            vendor="Schneider", model="EVlink Pro AC", connected=cp_id != "CP-006", last_seen=now,
            supply_phase=2 if phases == 1 else 1, vip=index == 0)
        Connector.objects.create(charger=chargers[cp_id], connector_id=0, status="Available", status_at=now)
        LimitState.objects.create(charger=chargers[cp_id], connector_id=0, purpose=LimitPurpose.TX_DEFAULT,
                                  in_force_a=10.0, last_status=AnswerStatus.ACCEPTED)
    sessions = {
        "CP-001": _charging(chargers["CP-001"], 1, "ALICE", 16.0, now, 12_340),
        "CP-002": _charging(chargers["CP-002"], 1, "BOB", 9.8, now, 5_120),
        "CP-003": _charging(chargers["CP-003"], 1, "04A1B2C3D4", 6.1, now, 800),
        "CP-004": _charging(chargers["CP-004"], 1, "CAFE01", 0.0, now, 20_000),
    }
    Connector.objects.create(charger=chargers["CP-005"], connector_id=1, status="Available", status_at=now)
    Connector.objects.create(charger=chargers["CP-006"], connector_id=1, status="Faulted", error_code="GroundFailure",
                             status_at=now)
    states = {
        "CP-001": dict(in_force_a=16.0, wanted_a=16.0, binding="session max", last_status=AnswerStatus.ACCEPTED),
        "CP-002": dict(in_force_a=16.0, pending_a=10.0, pending_max_a=16.0, wanted_a=10.0,
                       binding="zone:Connection point phase L1", waiting="waiting for the charger's answer"),
        "CP-003": dict(in_force_a=6.0, wanted_a=8.0, binding="zone:Level -2 phase L1",
                       last_status=AnswerStatus.REJECTED, last_detail="charger answered Rejected"),
        "CP-004": dict(in_force_a=0.0, in_force_paused=True, wanted_a=0.0, wanted_paused=True,
                       binding="shed", waiting="paused until 12:15 (rotation)", last_status=AnswerStatus.ACCEPTED),
    }
    for cp_id, fields in states.items():
        tx = sessions[cp_id]
        LimitState.objects.create(charger=chargers[cp_id], connector_id=1, purpose=LimitPurpose.TX,
                                  transaction_id=tx.pk, **fields)
        Setpoint.objects.create(timestamp=now, charger=chargers[cp_id], connector_id=1, transaction_id=tx.pk,
                                limit_a=fields["wanted_a"], paused=bool(fields.get("wanted_paused")),
                                binding=str(fields["binding"]), sent=True, status="Accepted")
    return Site(root, level1, level2, chargers, sessions)
