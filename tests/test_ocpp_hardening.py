"""Hostile input against a real Daphne: answered per OCPP-J, nothing stored, link kept."""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
from typing import Any
from urllib.parse import urlparse

import pytest
import websockets
from ocpp.v16 import call

from chargers.commands import ChargerCallError, send_call
from chargers.models import Charger, OcppMessage, RegistrationStatus
from chargers.services import MESSAGE_LOG_PAYLOAD_MAX_CHARS, message_log
from tests.central_wire import RecordingWire, central_point
from tests.conftest import wait_until
from transactions.models import Transaction

START = ('[2,"%s","StartTransaction",{"connectorId":1,"idTag":"T1","meterStart":0,'
         '"timestamp":"2026-11-23T10:00:00Z"}]')


@pytest.fixture
def charger(accepted_charger):
    return accepted_charger("CP-HARD")


def error_of(sim, frame: str) -> tuple[str, str]:
    sim.send_raw(frame)
    response = sim.recv_raw_response()
    return response.error_code, response.unique_id


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('[2,"h1","Heartbeat",{"x":NaN}]', "FormationViolation"),
        ('[2,"h1","Heartbeat",{"x":-Infinity}]', "FormationViolation"),
        ('[2,"h1","Heartbeat",{"x":1e309}]', "FormationViolation"),
        ('[2,"h1","Heartbeat",{"x":' + "[" * 100_000 + "]" * 100_000 + "}]", "FormationViolation"),
        ('[2,"h1","StatusNotification",{"connectorId":-1,"errorCode":"NoError","status":"Available"}]',
         "PropertyConstraintViolation"),
        ('[2,"h1","StatusNotification",{"connectorId":9223372036854775808,"errorCode":"NoError",'
         '"status":"Available"}]', "TypeConstraintViolation"),
        ('[2,"h1","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Flying"}]',
         "PropertyConstraintViolation"),
        ('[2,"h1","BootNotification",{"chargePointVendor":"V\\u0000x","chargePointModel":"M"}]',
         "PropertyConstraintViolation"),
        ('[2,"h1","BootNotification",{"chargePointVendor":"V\\udc00","chargePointModel":"M"}]',
         "PropertyConstraintViolation"),
        ('[2,"h1","MeterValues",{"connectorId":1,"transactionId":99999999999,"meterValue":[]}]',
         "TypeConstraintViolation"),
    ],
)
def test_hostile_values_get_their_call_error_and_the_link_stays(charger, frame, code):
    assert error_of(charger, frame) == (code, "h1")
    assert charger.call(call.Heartbeat()).current_time
    assert Charger.objects.get(charge_point_id="CP-HARD").connected
    assert not Transaction.objects.exists()
    logged = OcppMessage.objects.get(charge_point_id="CP-HARD", action="bad frame")
    assert code in logged.error


def test_a_nul_padded_serial_number_boots(ocpp_url, charger_factory):
    sim = charger_factory(ocpp_url, "CP-PADDED").connect()
    sim.send_raw('[2,"b1","BootNotification",{"chargePointVendor":"Acme\\u0000\\u0000",'
                 '"chargePointModel":"W","chargePointSerialNumber":"SN12\\u0000"}]')
    answer = sim.recv_raw_response()
    assert answer.payload["status"] == "Pending"
    charger = Charger.objects.get(charge_point_id="CP-PADDED")
    assert (charger.vendor, charger.serial_number) == ("Acme", "SN12")


def test_answers_to_no_outstanding_call_are_dropped_and_logged_once(charger):
    big = {"blob": "x" * 100_000}
    for number in range(50):
        charger.send_raw(json.dumps([3, f"never-asked-{number}", big]))
    charger.send_raw(json.dumps([4, "never-asked-x", "GenericError", "", {}]))
    # The next server call gets its own answer at once, not the backlog's.
    assert send_call("CP-HARD", "ClearCache", {}, timeout_s=5) == {"status": "Accepted"}
    dropped = OcppMessage.objects.filter(charge_point_id="CP-HARD", action="answer to no outstanding call dropped")
    assert dropped.count() == 1
    assert not OcppMessage.objects.filter(charge_point_id="CP-HARD", unique_id__startswith="never-asked").exclude(
        action="answer to no outstanding call dropped").exists()


def test_answers_are_logged_with_their_payload_and_error_details(charger):
    assert send_call("CP-HARD", "GetLocalListVersion", {}) == {"listVersion": 0}
    answers = OcppMessage.objects.filter(charge_point_id="CP-HARD", message_type="CALLRESULT", direction="in")
    assert {"listVersion": 0} in [row.payload for row in answers]
    charger.cp.answers["Reset"] = "Sideways"  # the simulator's own validation turns this into a CALLERROR
    with pytest.raises(ChargerCallError):
        send_call("CP-HARD", "Reset", {"type": "Soft"})
    error = OcppMessage.objects.get(charge_point_id="CP-HARD", message_type="CALLERROR", direction="in")
    assert error.error.startswith("FormatViolation: ")  # as the charger spelled it
    assert "Sideways" in json.dumps(error.payload)  # the details the charger gave


def test_a_charger_rejected_while_connected_starts_no_session(charger):
    Charger.objects.filter(charge_point_id="CP-HARD").update(registration_status=RegistrationStatus.REJECTED)
    assert error_of(charger, START % "s1") == ("SecurityError", "s1")
    assert not Transaction.objects.exists()


@pytest.mark.django_db
def test_the_message_log_keeps_big_payloads_short():
    now = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
    message_log(charge_point_id="CP", charger_pk=None, direction="in", now=now, payload={"x": "y" * 1_000_000})
    message_log(charge_point_id="CP\x00", charger_pk=None, direction="in", now=now, payload={"n": float("nan"),
                "s": "a\x00b\ud800"}, error="e\x00")
    big, odd = OcppMessage.objects.order_by("id")
    assert big.payload["truncated"] is True and len(big.payload["head"]) == MESSAGE_LOG_PAYLOAD_MAX_CHARS
    assert odd.payload == {"n": "nan", "s": "a\ufffdb\ufffd"} and odd.charge_point_id == "CP\ufffd"


@pytest.mark.django_db
def test_the_message_log_cap_holds_at_every_row(settings):
    settings.OCPP_LOG_MAX_ROWS = 1000
    now = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
    for number in range(1500):
        message_log(charge_point_id="CP", charger_pk=None, direction="in", now=now)
        if number % 100 == 0:
            assert OcppMessage.objects.count() <= 1000
    assert 900 < OcppMessage.objects.count() <= 1000


def raw_handshake(url: str, path: bytes, extra: bytes = b"") -> bytes:
    """The HTTP status line a websocket handshake for `path` gets (bytes as sent)."""
    parsed = urlparse(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as sock:
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Protocol: ocpp1.6\r\n" + extra + b"\r\n")
        return sock.recv(4096).split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    "path",
    [b"/ocpp/", b"/ocpp/" + b"L" * 49, b"/ocpp/a/b", b"/ocpp/a%2Fb", b"/ocpp/a%252Fb", b"/ocpp/..", b"/ocpp/.",
     b"/ocpp/CP%00", b"/ocpp/Q1?x=1", b"/ocpp/%FF", b"/elsewhere", b"/"],
)
def test_bad_identities_are_refused_at_the_handshake(ocpp_url, path):
    assert raw_handshake(ocpp_url, path) == b"HTTP/1.1 403 Access denied"
    assert not Charger.objects.exists()


def test_an_identity_is_case_insensitive(ocpp_url, charger_factory):
    Charger.objects.create(charge_point_id="CP-Case", registration_status=RegistrationStatus.ACCEPTED)
    sim = charger_factory(ocpp_url, "cp-case").connect()
    assert sim.boot().status == "Accepted"
    assert Charger.objects.count() == 1


def test_one_address_registers_few_new_ids_a_minute(servers, transactional_db, charger_factory):
    url = servers.daphne(OCPP_REGISTRATIONS_PER_ADDRESS="2")
    Charger.objects.create(charge_point_id="CP-KNOWN", registration_status=RegistrationStatus.ACCEPTED)
    for cp_id in ("CP-NEW-1", "CP-NEW-2"):
        charger_factory(url, cp_id).connect()
    with pytest.raises(websockets.InvalidStatus):
        charger_factory(url, "CP-NEW-3").connect()
    assert charger_factory(url, "CP-KNOWN").connect().boot().status == "Accepted"  # known ids still connect
    assert set(Charger.objects.values_list("charge_point_id", flat=True)) == {"CP-KNOWN", "CP-NEW-1", "CP-NEW-2"}


def test_wrong_passwords_are_rate_limited_per_id(servers, transactional_db, charger_factory):
    url = servers.daphne(OCPP_LOGIN_FAILURES_PER_ID="2")
    charger = Charger(charge_point_id="CP-LOCK", registration_status=RegistrationStatus.ACCEPTED)
    charger.set_password("right-password-123")
    charger.save()
    token = base64.b64encode(b"CP-LOCK:wrong").decode().encode()
    for _ in range(2):
        assert raw_handshake(url, b"/ocpp/CP-LOCK", b"Authorization: Basic " + token + b"\r\n").startswith(
            b"HTTP/1.1 403")
    with pytest.raises(websockets.InvalidStatus):
        charger_factory(url, "CP-LOCK", password="right-password-123").connect()
    refusals = OcppMessage.objects.filter(charge_point_id="CP-LOCK", action="connection refused")
    assert refusals.count() == 2  # the third was refused before hashing, without a row
    wait_until(lambda: not Charger.objects.get(charge_point_id="CP-LOCK").connected, timeout_s=1)


def test_the_password_check_needs_no_database():
    """It runs in a thread pool, off the database thread: no query may hide in it."""
    from django.contrib.auth.hashers import make_password

    from chargers.services import ChargerIdentity, charger_password_ok

    identity = ChargerIdentity(charger_pk=1, charge_point_id="CP-PW", password_hash=make_password("pw-123456"))
    assert charger_password_ok(identity=identity, credentials=("cp-pw", "pw-123456"))
    assert charger_password_ok(identity=identity, credentials=("cp-pw", "pw-123456"))  # cached
    assert not charger_password_ok(identity=identity, credentials=("CP-PW", "wrong"))
    assert not charger_password_ok(identity=identity, credentials=("OTHER", "pw-123456"))
    assert not charger_password_ok(identity=identity, credentials=None)


def test_a_bad_answer_gets_no_call_error_and_the_link_stays(charger):
    charger.send_raw('[3,"r1",{"x":NaN}]')
    assert charger.call(call.Heartbeat()).current_time  # the next frame the charger got is this answer
    assert OcppMessage.objects.filter(charge_point_id="CP-HARD", action="bad frame").count() == 1
    assert not OcppMessage.objects.filter(charge_point_id="CP-HARD", message_type="CALLERROR").exists()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_consumer_crash_closes_and_marks_the_charger_offline(monkeypatch):
    """An unexpected exception must not leave the charger "connected" behind a dead consumer."""
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator

    from chargers.consumers import OcppConsumer

    await sync_to_async(Charger.objects.create)(charge_point_id="CP-CRASH",
                                                registration_status=RegistrationStatus.ACCEPTED)
    communicator = WebsocketCommunicator(OcppConsumer.as_asgi(), "/ocpp/CP-CRASH", subprotocols=["ocpp1.6"])
    connected, subprotocol = await communicator.connect()
    assert connected and subprotocol == "ocpp1.6"
    assert (await sync_to_async(Charger.objects.get)(charge_point_id="CP-CRASH")).connected

    def explode(text: str) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr("chargers.consumers.parse_frame", explode)
    await communicator.send_to(text_data='[2,"c1","Heartbeat",{}]')
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4011}
    charger = await sync_to_async(Charger.objects.get)(charge_point_id="CP-CRASH")
    assert not charger.connected and charger.channel_name == ""
    await communicator.wait()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_websocket_closed_under_a_send_is_a_charger_gone_not_a_consumer_failure(monkeypatch, caplog):
    """Daphne raises autobahn's Disconnected on a send after the socket closed (a charger gone
    in the middle of its boot steps, seen in a benchmark's fleet closing): a call to it is
    ChargerOffline, as when it had gone before the call, and its answer lost is no crash."""
    from asgiref.sync import sync_to_async
    from autobahn.exception import Disconnected
    from channels.testing import WebsocketCommunicator

    from chargers.commands import ChargerOffline, send_call_async
    from chargers.consumers import OcppConsumer

    await sync_to_async(Charger.objects.create)(charge_point_id="CP-GONE",
                                                registration_status=RegistrationStatus.ACCEPTED)
    communicator = WebsocketCommunicator(OcppConsumer.as_asgi(), "/ocpp/CP-GONE", subprotocols=["ocpp1.6"])
    connected, _ = await communicator.connect()
    assert connected
    sent = OcppConsumer.send

    async def closed_socket(self: OcppConsumer, *args: object, **kwargs: object) -> None:
        raise Disconnected("Attempt to send on a closed protocol")

    monkeypatch.setattr(OcppConsumer, "send", closed_socket)
    with pytest.raises(ChargerOffline):
        await send_call_async("CP-GONE", "ClearCache", {}, timeout_s=5)
    await communicator.send_to(text_data='[2,"h1","Heartbeat",{}]')  # its answer meets the closed socket
    assert await communicator.receive_nothing(timeout=0.5)  # no close 4011: the consumer lives on
    assert "consumer failed" not in caplog.text

    monkeypatch.setattr(OcppConsumer, "send", sent)
    await communicator.send_to(text_data='[2,"h2","Heartbeat",{}]')
    answer = json.loads(await communicator.receive_from(timeout=5))
    assert answer[:2] == [3, "h2"] and "currentTime" in answer[2]
    assert (await sync_to_async(Charger.objects.get)(charge_point_id="CP-GONE")).connected
    await communicator.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_connected_consumer_holds_no_task_of_its_own_and_gets_layer_messages_in_its_receive_queue():
    """Each connection costs its application's task and nothing more (Channels' two-receive
    dispatch kept two tasks and a wait per charger), and messages sent to its channel still
    reach it: here the notice that a new connection replaced it."""
    import asyncio

    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer
    from channels.testing import WebsocketCommunicator

    from chargers.consumers import CLOSE_REPLACED, OcppConsumer

    async def connect(number: int) -> WebsocketCommunicator:
        await sync_to_async(Charger.objects.create)(charge_point_id=f"CP-Q{number}",
                                                    registration_status=RegistrationStatus.ACCEPTED)
        communicator = WebsocketCommunicator(OcppConsumer.as_asgi(), f"/ocpp/CP-Q{number}", subprotocols=["ocpp1.6"])
        connected, _ = await communicator.connect()
        assert connected
        return communicator

    first = [await connect(number) for number in range(2)]  # the process's shared tasks started
    await asyncio.sleep(0.1)
    tasks_before = len(asyncio.all_tasks())
    more = [await connect(number) for number in range(2, 8)]
    await asyncio.sleep(0.1)
    assert len(asyncio.all_tasks()) - tasks_before == len(more)
    layer = get_channel_layer()
    for number, communicator in enumerate(first + more):
        channel = await sync_to_async(lambda n=number: Charger.objects.get(charge_point_id=f"CP-Q{n}").channel_name)()
        await layer.send(channel, {"type": "ocpp.replaced"})
        assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": CLOSE_REPLACED}
        await communicator.wait()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_an_accepted_chargers_frame_is_answered_while_its_acceptance_is_re_read_and_the_next_follows_it(
        monkeypatch):
    """The periodic re-read of an accepted charger's registration runs beside the frame that found
    it due: here the re-read is held on the database thread and the Heartbeat is answered
    meanwhile. The charger was rejected: once the re-read is done, its next frame is refused."""
    import threading

    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator

    from chargers import consumers, services
    from chargers.consumers import OcppConsumer

    charger = await sync_to_async(Charger.objects.create)(charge_point_id="CP-RECHECK",
                                                         registration_status=RegistrationStatus.ACCEPTED)
    released, reads = threading.Event(), []
    original = services.chargers_accepted_many

    def held_read(charger_pks: list[int]) -> dict[int, bool]:
        released.wait(10)
        reads.append(charger_pks)
        return original(charger_pks)

    monkeypatch.setattr(services, "chargers_accepted_many", held_read)
    communicator = WebsocketCommunicator(OcppConsumer.as_asgi(), "/ocpp/CP-RECHECK", subprotocols=["ocpp1.6"])
    connected, _ = await communicator.connect()
    assert connected
    await sync_to_async(Charger.objects.filter(pk=charger.pk).update)(registration_status=RegistrationStatus.REJECTED)
    monkeypatch.setattr(consumers, "ACCEPTANCE_RECHECK_S", 0.0)  # every frame finds its re-read due
    try:
        await communicator.send_to(text_data='[2,"h1","Heartbeat",{}]')
        answer = json.loads(await communicator.receive_from(timeout=5))
        assert answer[:2] == [3, "h1"] and "currentTime" in answer[2]
        assert reads == []  # answered before the re-read was done
    finally:
        released.set()
    assert await _first_read(reads) == [charger.pk]
    await _assert_next_heartbeat_refused(communicator)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_re_read_older_than_the_operators_notice_does_not_undo_it(monkeypatch):
    """The background re-read read "accepted" just before the operator rejected the charger; the
    notice arrives while that read is still on its way back: the notice stands."""
    import asyncio
    import threading

    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer
    from channels.testing import WebsocketCommunicator

    from chargers import consumers, services
    from chargers.consumers import OcppConsumer

    charger = await sync_to_async(Charger.objects.create)(charge_point_id="CP-STALE",
                                                         registration_status=RegistrationStatus.ACCEPTED)
    read, released, reads = threading.Event(), threading.Event(), []
    original = services.chargers_accepted_many

    def read_then_held(charger_pks: list[int]) -> dict[int, bool]:
        seen = original(charger_pks)  # "accepted": read before the change
        if not reads:
            read.set()
            released.wait(10)
        reads.append(seen)
        return seen

    monkeypatch.setattr(services, "chargers_accepted_many", read_then_held)
    communicator = WebsocketCommunicator(OcppConsumer.as_asgi(), "/ocpp/CP-STALE", subprotocols=["ocpp1.6"])
    connected, _ = await communicator.connect()
    assert connected
    monkeypatch.setattr(consumers, "ACCEPTANCE_RECHECK_S", 0.0)
    try:
        await communicator.send_to(text_data='[2,"h1","Heartbeat",{}]')  # starts the re-read
        assert json.loads(await communicator.receive_from(timeout=5))[:2] == [3, "h1"]
        monkeypatch.setattr(consumers, "ACCEPTANCE_RECHECK_S", 10.0)  # no other re-read from here
        assert await asyncio.to_thread(read.wait, 5)
        # Not on the database thread the held read occupies: a thread and connection of their own.
        await sync_to_async(Charger.objects.filter(pk=charger.pk).update, thread_sensitive=False)(
            registration_status=RegistrationStatus.REJECTED)
        channel = await sync_to_async(lambda: Charger.objects.get(pk=charger.pk).channel_name,
                                      thread_sensitive=False)()
        await get_channel_layer().send(channel, {"type": "ocpp.registration", "accepted": False})
        await asyncio.sleep(0.3)  # the notice reaches the consumer
    finally:
        released.set()
    assert await _first_read(reads) == {charger.pk: True}
    await _assert_next_heartbeat_refused(communicator)


async def _first_read(reads: list[Any]) -> Any:
    """The first of `reads` once the held read has been released and has returned (5 s at most)."""
    import asyncio

    for _ in range(100):
        if reads:
            return reads[0]
        await asyncio.sleep(0.05)
    raise AssertionError("the held read never returned")


async def _assert_next_heartbeat_refused(communicator: Any) -> None:
    import asyncio

    await asyncio.sleep(0.05)  # the read's result reaches the consumer
    await communicator.send_to(text_data='[2,"h2","Heartbeat",{}]')
    assert json.loads(await communicator.receive_from(timeout=5))[:3] == [4, "h2", "SecurityError"]
    await communicator.disconnect()


def test_wrong_password_storms_do_not_slow_other_chargers(servers, transactional_db, charger_factory):
    """The hash runs off the database thread: heartbeats of others stay fast while it runs."""
    import statistics
    import threading
    import time

    url = servers.daphne(OCPP_LOGIN_FAILURES_PER_ID="100000", OCPP_LOGIN_FAILURES_PER_ADDRESS="100000")
    for number in range(4):
        locked = Charger(charge_point_id=f"CP-STORM-{number}", registration_status=RegistrationStatus.ACCEPTED)
        locked.set_password("right-password-123")
        locked.save()
    Charger.objects.create(charge_point_id="CP-CALM", registration_status=RegistrationStatus.ACCEPTED)
    calm = charger_factory(url, "CP-CALM").connect()
    stop = threading.Event()

    def storm(number: int) -> None:
        token = base64.b64encode(f"CP-STORM-{number}:wrong".encode()).decode().encode()
        while not stop.is_set():
            raw_handshake(url, f"/ocpp/CP-STORM-{number}".encode(), b"Authorization: Basic " + token + b"\r\n")

    threads = [threading.Thread(target=storm, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    latencies = []
    try:
        time.sleep(0.5)
        for _ in range(20):
            started = time.monotonic()
            calm.call(call.Heartbeat())
            latencies.append(time.monotonic() - started)
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert statistics.median(latencies) < 0.3, latencies


def test_back_to_back_calls_each_get_their_answer(charger):
    """The next call may be out while the previous answer is still being validated: its answer
    must survive the clean-up of the previous call."""
    import asyncio

    from asgiref.sync import async_to_sync

    from chargers.commands import send_call_async

    async def many() -> list[dict[str, object]]:
        return list(await asyncio.gather(*(send_call_async("CP-HARD", "ClearCache", {}, timeout_s=10)
                                           for _ in range(12))))

    assert async_to_sync(many)() == [{"status": "Accepted"}] * 12


@pytest.mark.asyncio
async def test_the_next_calls_answer_survives_the_previous_calls_clean_up(monkeypatch):
    """Call A's answer is validated off the loop; meanwhile call B goes out and is answered.
    Cleaning A's leftovers must not throw B's answer away (B would time out)."""
    import asyncio

    from ocpp.messages import CallResult
    from ocpp.v16 import call as v16_call

    wire = RecordingWire()
    point = central_point("CP-RACE", wire)
    gate = asyncio.Event()
    import ocpp.charge_point

    real_validate = ocpp.charge_point.validate_payload

    async def slow_validate(message: Any, version: str) -> None:
        if isinstance(message, CallResult) and message.unique_id == wire.sent[0][1]:
            await gate.wait()  # A's answer is still being validated…
            return
        await real_validate(message, version)

    monkeypatch.setattr("ocpp.charge_point.validate_payload", slow_validate)

    async def sent(count: int) -> None:
        while len(wire.sent) < count:
            await asyncio.sleep(0.01)

    call_a = asyncio.ensure_future(point.call(v16_call.ClearCache()))
    await sent(1)
    await point.route_message(json.dumps([3, wire.sent[0][1], {"status": "Accepted"}]))
    call_b = asyncio.ensure_future(point.call(v16_call.ClearCache()))
    await sent(2)  # …while B is out
    assert point.awaits(wire.sent[1][1])
    gate.set()  # A finishes first, right after B's answer is queued
    await point.route_message(json.dumps([3, wire.sent[1][1], {"status": "Rejected"}]))
    assert (await call_a).status == "Accepted"
    assert (await call_b).status == "Rejected"


def test_a_call_unanswered_within_the_response_timeout_raises_and_the_next_call_goes_out():
    """Our CALL's answer is awaited within the charge point's response timeout (a timeout scope):
    past it the call raises TimeoutError, its id is no longer awaited (a late answer is the
    consumer's to drop), and the next call goes out and gets its answer."""
    import asyncio
    import time

    async def unanswered_then_answered() -> float:
        wire = RecordingWire()
        point = central_point("CP-LATE", wire, response_timeout=1)
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await point.request("ClearCache", {})
        waited_s = time.monotonic() - began
        assert not point.awaits(wire.sent[0][1])  # a late answer to it is not taken
        second = asyncio.ensure_future(point.request("ClearCache", {}))
        while len(wire.sent) < 2:
            await asyncio.sleep(0.01)
        await point.route_message(json.dumps([3, wire.sent[1][1], {"status": "Accepted"}]))
        assert (await second)[2] == {"status": "Accepted"}
        return waited_s

    assert 0.9 <= asyncio.run(unanswered_then_answered()) < 5


@pytest.mark.django_db(transaction=True)
def test_two_processes_cutting_the_message_log_back_together_never_wait_on_each_other(settings):
    """PostgreSQL: each web process cuts the log back in its own write batch; while the other
    one is cutting, a process skips its cut instead of waiting (waiting on each other row by
    row deadlocked)."""
    import threading

    from django.db import connection, connections, transaction

    from chargers.services import _message_log_cap

    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: nothing to cross")
    settings.OCPP_LOG_MAX_ROWS = 1000
    now = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
    OcppMessage.objects.bulk_create([OcppMessage(charge_point_id="CP", direction="in", timestamp=now)
                                     for _ in range(1200)])
    last = OcppMessage.objects.order_by("-id").values_list("id", flat=True).first()
    first = last - 1199
    holding, other_done = threading.Event(), threading.Event()

    def first_process() -> None:
        try:
            with transaction.atomic():
                _message_log_cap(first_id=first, last_id=last)  # deletes the oldest rows, holds the cut's lock
                holding.set()
                other_done.wait(10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=first_process)
    holder.start()
    assert holding.wait(10)
    with transaction.atomic():
        _message_log_cap(first_id=first, last_id=last)  # would wait for the holder's row locks
    finished_while_held = holder.is_alive()
    other_done.set()
    holder.join(10)
    assert finished_while_held
    assert OcppMessage.objects.count() <= 1000


@pytest.mark.django_db(transaction=True)
def test_a_cut_skipped_while_another_process_cuts_is_caught_up_by_the_next(settings):
    """The cut is one range DELETE (the row-locking subselect cost 30 times as much on
    PostgreSQL), and none runs while the ids are below the cap; a process that finds the
    cut's lock taken skips, and the next cut, one prune step later, deletes everything the
    cap no longer allows."""
    from django.core.management.color import no_style
    from django.db import connection, connections
    from django.test.utils import CaptureQueriesContext

    from chargers.services import MESSAGE_LOG_CAP_LOCK, _message_log_cap

    settings.OCPP_LOG_MAX_ROWS = 1000
    now = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)

    def add(rows: int) -> int:
        OcppMessage.objects.bulk_create([OcppMessage(charge_point_id="CP", direction="in", timestamp=now)
                                         for _ in range(rows)])
        return OcppMessage.objects.order_by("-id").values_list("id", flat=True).first() or 0

    OcppMessage.objects.all().delete()
    with connection.cursor() as cursor:  # ids from 1 again, as in a new database
        for statement in connection.ops.sequence_reset_by_name_sql(
                no_style(), [{"table": OcppMessage._meta.db_table, "column": "id"}]):
            cursor.execute(statement)
    last = add(900)
    assert last == 900
    with CaptureQueriesContext(connection) as below_the_cap:
        _message_log_cap(first_id=last - 99, last_id=last)
    assert below_the_cap.captured_queries == []  # nothing to cut yet: no statement at all
    last = add(200)
    if connection.vendor == "postgresql":
        import psycopg

        holder = psycopg.connect(**connections["default"].get_connection_params())
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock(%s)", [MESSAGE_LOG_CAP_LOCK])
        try:
            _message_log_cap(first_id=last - 99, last_id=last)  # another process is cutting: skipped
        finally:
            holder.rollback()
            holder.close()
        assert OcppMessage.objects.count() == 1100
        last = add(100)
    with CaptureQueriesContext(connection) as queries:
        _message_log_cap(first_id=last - 99, last_id=last)
    deletes = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("DELETE")]
    assert len(deletes) == 1 and "SELECT" not in deletes[0] and "<=" in deletes[0], deletes
    assert 900 < OcppMessage.objects.count() <= 1000


def test_our_call_ids_are_unique_short_and_carry_the_process_prefix():
    """OCPP-J §4.1.1: a CALL's id is unique among the sender's calls, 36 characters at most."""
    from chargers import protocol

    ids = [protocol.next_call_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(call_id) <= 36 and call_id.startswith(protocol._CALL_ID_PREFIX + "-") for call_id in ids)
