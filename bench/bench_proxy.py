"""Upstream proxy figures: added latency per forwarded message, and the queue's replay rate.

Starts, in a temporary directory: Redis (embedded, as the tests do), a fresh SQLite database
(migrated), Daphne; a fake CPO backend (tests.proxy_cpo) on loopback; a simulated charger.

1. Latency, charger send → backend receipt, one message at a time (Heartbeat, StatusNotification,
   and transaction MeterValues, which go through the durable queue): the charger connected straight to
   the backend, then through the controller. The difference is what the proxy adds.
2. Replay rate: the backend goes away, the charger sends a StartTransaction and N MeterValues (queued in
   the database), the backend comes back; messages per second from the first replayed to the last.

Usage: .venv/bin/python bench/bench_proxy.py [--messages 200] [--queued 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
WORK = tempfile.mkdtemp(prefix="evce-bench-proxy-")
os.environ.update(DATABASE_URL=f"sqlite:///{WORK}/db.sqlite3", EVCE_DATA_DIR=WORK, HTTPS="false",
                  LOG_LEVEL="warning", DJANGO_SETTINGS_MODULE="evce.settings")
import django  # noqa: E402

import tests.embedded_services  # noqa: E402,F401 - starts a Redis and exports REDIS_URL

django.setup()

from ocpp.v16 import call  # noqa: E402

from tests.embedded_services import free_port  # noqa: E402
from tests.ocpp_sim import ChargerSim, utc_iso  # noqa: E402
from tests.proxy_cpo import FakeCpo  # noqa: E402


def wait(predicate: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.0005)


def meter_value(wh: int) -> list[dict[str, Any]]:
    return [{"timestamp": utc_iso(), "sampled_value": [{"value": str(wh), "measurand": "Energy.Active.Import.Register",
                                                        "unit": "Wh"}]}]


def latencies(sim: ChargerSim, cpo: FakeCpo, messages: int, tx_id: int | None) -> dict[str, list[float]]:
    """ms from the charger's send to the backend's receipt, per message kind, one message at a time."""
    kinds: dict[str, Any] = {
        "Heartbeat": lambda n: call.Heartbeat(),
        "StatusNotification": lambda n: call.StatusNotification(connector_id=1, error_code="NoError",
                                                                 status="Charging" if n % 2 else "SuspendedEV"),
    }
    if tx_id is not None:
        kinds["MeterValues (transaction)"] = lambda n: call.MeterValues(connector_id=1, transaction_id=tx_id,
                                                                        meter_value=meter_value(n))
    found: dict[str, list[float]] = {}
    for kind, make in kinds.items():
        found[kind] = []
        for n in range(messages):
            before = len(cpo.received)
            started = time.perf_counter()
            sim.call(make(n))
            wait(lambda before=before: len(cpo.received) > before)
            found[kind].append((cpo.received[before][3] - started) * 1000)
    return found


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50_ms": round(statistics.median(ordered), 2), "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1], 2),
            "mean_ms": round(statistics.fmean(ordered), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--queued", type=int, default=1000)
    parser.add_argument("--json")
    args = parser.parse_args()
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, check=True)  # noqa: S603

    from badges.models import Badge
    from chargers.models import Charger, RegistrationStatus
    from proxy.models import QueuedMessage, Role, UpstreamBackend, UpstreamLink

    cpo = FakeCpo(first_tx_id=1000)
    results: dict[str, Any] = {}
    # 1a. Direct: the charger talks to the backend itself (no controller).
    direct = ChargerSim(f"ws://127.0.0.1:{cpo.port}", "CP-DIRECT").connect()
    direct.boot()
    tx = direct.call(call.StartTransaction(connector_id=1, id_tag="D", meter_start=0, timestamp=utc_iso()))
    results["direct"] = {k: summary(v) for k, v in latencies(direct, cpo, args.messages, tx.transaction_id).items()}
    direct.close()
    # 1b. Through the controller.
    port = free_port()
    daphne = subprocess.Popen([sys.executable, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(port),  # noqa: S603
                               "evce.asgi:application"], cwd=BASE_DIR)
    try:
        charger = Charger.objects.create(charge_point_id="CP-PROXY", registration_status=RegistrationStatus.ACCEPTED)
        backend = UpstreamBackend.objects.create(name="CPO", url=cpo.url, message_timeout_s=5,
                                                 queue_max_messages=max(10_000, args.queued + 10))
        link = UpstreamLink.objects.create(charger=charger, backend=backend, role=Role.PRIMARY)
        Badge.objects.create(id_tag="D")
        from tests.conftest import wait_for_port

        wait_for_port(port, daphne)
        sim = ChargerSim(f"ws://127.0.0.1:{port}", "CP-PROXY").connect()
        sim.boot()
        wait(lambda: UpstreamLink.objects.filter(pk=link.pk, connected=True).exists())
        tx = sim.call(call.StartTransaction(connector_id=1, id_tag="D", meter_start=0, timestamp=utc_iso()))
        wait(lambda: "StartTransaction" in cpo.actions("CP-PROXY"))
        results["proxied"] = {k: summary(v) for k, v in latencies(sim, cpo, args.messages, tx.transaction_id).items()}
        # 2. Replay rate.
        cpo.stop()
        wait(lambda: not UpstreamLink.objects.filter(pk=link.pk, connected=True).exists())
        for n in range(args.queued):
            sim.call(call.MeterValues(connector_id=1, transaction_id=tx.transaction_id, meter_value=meter_value(n)))
        wait(lambda: QueuedMessage.objects.filter(link=link).count() == args.queued, 120)
        before = len(cpo.received)
        cpo.start()
        wait(lambda: len([r for r in cpo.received[before:] if r[1] == "MeterValues"]) == args.queued, 600)
        replayed = [r[3] for r in cpo.received[before:] if r[1] == "MeterValues"]
        span = replayed[-1] - replayed[0]
        results["replay"] = {"messages": args.queued, "seconds": round(span, 2),
                             "messages_per_s": round((args.queued - 1) / span, 1)}
        sim.close()
    finally:
        daphne.terminate()
        daphne.wait(10)
        cpo.close()
    for kind in results["direct"]:
        added = results["proxied"][kind]["p50_ms"] - results["direct"][kind]["p50_ms"]
        results.setdefault("added_p50_ms", {})[kind] = round(added, 2)
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
