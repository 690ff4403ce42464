"""Benchmark of one control-loop tick without the network: gather (DB) → allocate → plan → send
(record pending) → record decisions; and the answers' recording (done where the websockets are).

Builds a site of N chargers with running sessions and recent meter samples in a throw-away
SQLite database (or DATABASE_URL if set), then times the tick's database and engine work. The
hand-over to the channel layer is replaced by "handed over" (the tick never waits for chargers),
and every profile is then answered Accepted through the same service the consumers call. It also
counts the ticks a fresh site needs to converge (a tick that sends nothing).

    python bench/bench_tick.py [--chargers 250 1000 5000] [--repeat 10] [--json out.json]
    python bench/bench_tick.py --chargers 1000 --history-minutes 120 --period 30   # sessions with a past

By default each session has one MeterValues, at the tick's time; `--history-minutes` gives each
the MeterValues of its past (every `--period` s) as a site has them, which the tick's reading of
recent currents must not walk through.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from pathlib import Path

from throwaway import setup_django  # beside this script: the project on the path, a throw-away database

setup_django()

from django.conf import settings  # noqa: E402

from evce import gctune  # noqa: E402

# The collector as the Celery worker that runs the loop tunes it (evce/celery.py): with Python's
# defaults a 5,000-session tick spent ~100 ms more in collections than the worker does.
gctune.tune(settings.GC_THRESHOLDS)

from django.core.management import call_command  # noqa: E402

from chargers.models import Charger  # noqa: E402
from loadmgmt import apply, engine, inputs, services  # noqa: E402
from loadmgmt.answers import MAX_BATCH  # noqa: E402
from loadmgmt.models import LimitState, Zone  # noqa: E402
from transactions.models import MeterSample, Transaction  # noqa: E402


def build_site(chargers: int, now: dt.datetime, history_minutes: float = 0.0, period_s: float = 60.0) -> None:
    Zone.objects.filter(parent__isnull=False).delete()
    Zone.objects.all().delete()
    root = Zone.objects.create(name="Connection point", max_current_a=chargers * 8.0, max_power_kw=chargers * 5.0)
    boards = [Zone.objects.create(name=f"Board {b}", parent=root, max_current_a=chargers * 1.0) for b in range(19)]
    rows = [Charger(charge_point_id=f"CP-{n:05d}", registration_status="accepted", connected=True,
                    zone=boards[n % len(boards)], rated_max_current_a=32, phases=3 if n % 4 else 1,
                    supply_phase=1 + n % 3) for n in range(chargers)]
    Charger.objects.bulk_create(rows)
    saved = list(Charger.objects.all())
    Transaction.objects.bulk_create([Transaction(charger=c, connector_id=1, id_tag=f"T{c.pk}", meter_start_wh=0,
                                                 start_time=now - dt.timedelta(minutes=c.pk % 300))
                                     for c in saved])
    samples: list[MeterSample] = []
    for tx in Transaction.objects.all():
        # The session's MeterValues so far (--history-minutes, each --period s), the latest at `now`.
        age_s = min(history_minutes * 60, (now - tx.start_time).total_seconds())
        for back in range(int(age_s // period_s), -1, -1):
            samples.extend(meter_values_rows(tx, now - dt.timedelta(seconds=back * period_s)))
        if len(samples) >= 20_000:
            MeterSample.objects.bulk_create(samples, batch_size=2000)
            samples = []
    MeterSample.objects.bulk_create(samples, batch_size=2000)


def meter_values_rows(tx: Transaction, at: dt.datetime) -> list[MeterSample]:
    """The five samples of one MeterValues, as the scale benchmark's chargers send them."""
    rows = [MeterSample(charger_id=tx.charger_id, connector_id=1, transaction=tx, timestamp=at,
                        measurand="Current.Import", phase=phase, value=12.0, raw_value="12.0")
            for phase in ("L1", "L2", "L3")]
    rows.append(MeterSample(charger_id=tx.charger_id, connector_id=1, transaction=tx, timestamp=at,
                            measurand="Energy.Active.Import.Register", value=5000.0, raw_value="5000"))
    rows.append(MeterSample(charger_id=tx.charger_id, connector_id=1, transaction=tx, timestamp=at,
                            measurand="Power.Active.Import", value=8000.0, raw_value="8000"))
    return rows


def handed_over(casts: list) -> list[str | None]:
    """Stands in for the channel layer: every call handed over, nobody waits."""
    if casts and casts[0].context.get("transaction_id") is not None and "sessions_at" not in marks:
        marks["sessions_at"] = time.perf_counter()
    handed.extend(casts)
    return [None] * len(casts)


marks: dict[str, float] = {}


handed: list = []
apply.cast_calls = handed_over  # type: ignore[assignment]


def answer_all(now: dt.datetime) -> float:
    """Every profile handed over is Accepted, recorded as the process holding the websockets does
    (`loadmgmt.answers`: in batches of what queued up, here all at once); returns the seconds it took."""
    started = time.perf_counter()
    answers = [services.Answer(services.SendTicket.from_context(cast.context), "Accepted") for cast in handed]
    for start in range(0, len(answers), MAX_BATCH):
        services.limit_answers_record(answers[start:start + MAX_BATCH], now=now)
    handed.clear()
    return time.perf_counter() - started


def time_tick(now: dt.datetime) -> dict[str, float]:
    started = time.perf_counter()
    gathered = inputs.gather(now)
    t_gather = time.perf_counter()
    allocation = engine.allocate(gathered.engine_zones(), gathered.sessions, gathered.policy, now.timestamp())
    t_allocate = time.perf_counter()
    sessions = apply.plan_sessions(gathered, allocation)
    t_plan = time.perf_counter()
    outgoing = [apply.session_outgoing_for(gathered, item) for item in sessions.sends]
    apply.send(outgoing, gathered, now)
    t_send = time.perf_counter()
    targets, defaults = apply.plan_defaults(gathered, now)
    t_plan_defaults = time.perf_counter()
    default_outgoing = [apply.default_outgoing_for(gathered, item) for item in defaults.sends]
    apply.send(default_outgoing, gathered, now)
    tick = apply.TickPlan(sessions, defaults, [*outgoing, *default_outgoing], targets)
    t_defaults = time.perf_counter()
    apply.record_decisions(gathered, allocation, tick, now)
    t_record = time.perf_counter()
    answers = answer_all(now)
    return {"gather": t_gather - started, "allocate": t_allocate - t_gather,
            "plan": t_plan - t_allocate + t_plan_defaults - t_send,
            "send": t_send - t_plan + t_defaults - t_plan_defaults, "record": t_record - t_defaults,
            "total": t_record - started,
            "answers": answers, "sent": float(len(tick.outgoing))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chargers", type=int, nargs="+", default=[250, 1000])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--history-minutes", type=float, default=0.0,
                        help="each session's MeterValues history (sessions started up to 300 min ago); "
                             "0: only the latest, at the tick's time")
    parser.add_argument("--period", type=float, default=60.0, help="seconds between a session's MeterValues")
    parser.add_argument("--json", help="write the figures (ms) here")
    args = parser.parse_args()
    figures: dict[int, dict[str, float]] = {}
    call_command("migrate", verbosity=0)
    print(f"{'chargers':>8} {'phase':>9} {'median ms':>10} {'max ms':>8}")
    for count in args.chargers:
        Transaction.objects.all().delete()
        Charger.objects.all().delete()  # cascades to samples, setpoints and limit states
        LimitState.objects.all().delete()
        now = dt.datetime.now(dt.UTC)
        build_site(count, now, args.history_minutes, args.period)
        converging = [time_tick(now)]
        while converging[-1]["sent"] and len(converging) < 10:
            converging.append(time_tick(now))
        first = ", ".join(f"{k} {v * 1000:.0f}" for k, v in converging[0].items() if k != "sent")
        sent = ", ".join(str(int(run["sent"])) for run in converging)
        print(f"{count:>8} converged in {len(converging) - 1} tick(s) (profiles sent: {sent}); 1st tick ms: {first}")
        runs = [time_tick(now) for _ in range(args.repeat)]
        root = Zone.objects.get(parent__isnull=True)
        Zone.objects.filter(pk=root.pk).update(max_current_a=root.max_current_a * 0.7)  # a limit cut
        marks.clear()
        started = time.perf_counter()
        cut = time_tick(now)
        phases = ", ".join(f"{k} {cut[k] * 1000:.0f}" for k in ("gather", "allocate", "plan", "send", "record"))
        print(f"{count:>8} limit cut: {int(cut['sent'])} decreases; the sessions' ones handed over "
              f"{(marks['sessions_at'] - started) * 1000:.0f} ms after the tick started; whole tick "
              f"{cut['total'] * 1000:.0f} ms ({phases}); recording the answers {cut['answers'] * 1000:.0f} ms")
        figures[count] = {"converge_ticks": len(converging) - 1, "cut_tick_ms": round(cut["total"] * 1000, 1),
                          "cut_sent": int(cut["sent"]), "cut_answers_ms": round(cut["answers"] * 1000, 1),
                          **{f"cut_{k}_ms": round(cut[k] * 1000, 1) for k in ("gather", "plan", "send", "record")},
                          "cut_handed_over_ms": round((marks["sessions_at"] - started) * 1000, 1),
                          "meter_samples": MeterSample.objects.count()}
        for phase in ("gather", "allocate", "plan", "send", "record", "total"):
            values = [run[phase] * 1000 for run in runs]
            print(f"{count:>8} {phase:>9} {statistics.median(values):>10.1f} {max(values):>8.1f}")
            figures[count][f"{phase}_median_ms"] = round(statistics.median(values), 1)
            figures[count][f"{phase}_max_ms"] = round(max(values), 1)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
