"""Scale-out: two Daphne processes share the Redis channel layer; the loop's lease holds across processes."""

from __future__ import annotations

import subprocess
import sys
import time

from chargers.commands import send_call
from chargers.models import Charger, RegistrationStatus
from tests.conftest import BASE_DIR, wait_until


def test_a_command_reaches_a_charger_on_either_of_two_daphne_processes(servers, transactional_db, charger_factory):
    node_a, node_b = servers.daphne(SCALE_NODE="a"), servers.daphne(SCALE_NODE="b")
    assert node_a != node_b
    sims = {}
    for cp_id, url in (("CP-NODE-A", node_a), ("CP-NODE-B", node_b)):
        Charger.objects.create(charge_point_id=cp_id, registration_status=RegistrationStatus.ACCEPTED)
        sims[cp_id] = charger_factory(url, cp_id).connect()
        sims[cp_id].boot()
    channels = set(Charger.objects.values_list("channel_name", flat=True))
    assert len(channels) == 2  # one consumer in each process

    for cp_id, sim in sims.items():
        # As a Celery worker would: from another process, through the channel layer only.
        assert send_call(cp_id, "ClearCache", {}) == {"status": "Accepted"}
        assert ("ClearCache", {}) in sim.cp.received


def test_a_reconnect_to_the_other_process_closes_the_connection_held_by_the_first(servers, transactional_db,
                                                                                 charger_factory):
    """The old connection's process is alive (its inbox keeps its liveness key): it is told."""
    node_a, node_b = servers.daphne(SCALE_NODE="a"), servers.daphne(SCALE_NODE="b")
    Charger.objects.create(charge_point_id="CP-MOVES", registration_status=RegistrationStatus.ACCEPTED)
    first = charger_factory(node_a, "CP-MOVES").connect()
    first.boot()
    second = charger_factory(node_b, "CP-MOVES").connect()
    assert first.wait_closed() == 4000
    assert second.boot().status == "Accepted"


def test_a_stopped_process_is_known_gone_at_once(servers, transactional_db, charger_factory):
    """SIGTERM: the process deletes its liveness key as it stops, so the chargers reconnecting
    elsewhere right after do not send their "close" notices to its inbox for ALIVE_TTL_S more."""
    import redis
    from django.conf import settings

    from chargers.inbox import ALIVE_PREFIX, process_key_of

    url = servers.daphne(SCALE_NODE="stops")
    Charger.objects.create(charge_point_id="CP-STOPS", registration_status=RegistrationStatus.ACCEPTED)
    charger_factory(url, "CP-STOPS").connect().boot()
    channel = Charger.objects.get(charge_point_id="CP-STOPS").channel_name
    liveness_key = ALIVE_PREFIX + process_key_of(channel)
    client = redis.Redis.from_url(settings.REDIS_URL)
    wait_until(lambda: client.exists(liveness_key))
    process = servers.process_of(url)
    servers.stop(process)
    assert process.returncode == 0  # stopped by its signal, not killed after the grace period
    assert not client.exists(liveness_key)


def test_the_loop_never_runs_twice_at_once_across_processes(servers, transactional_db):
    from loadmgmt import tasks

    holder = subprocess.Popen(  # another worker, in the middle of a tick
        [sys.executable, "-c", "import django; django.setup(); import time; from loadmgmt import tasks; "
         "lease = tasks.Lease(tasks._redis()); assert lease.acquire(); print('held', flush=True); "
         "time.sleep(3); lease.release()"],
        cwd=BASE_DIR, env=servers.env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert tasks.control_tick(force=True) is None  # skipped: the other worker holds the lease
        assert holder.wait(15) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
    started = time.monotonic()
    report = wait_until(lambda: tasks.control_tick(force=True), timeout_s=10)
    assert report["sessions"] == 0 and time.monotonic() - started < 10
