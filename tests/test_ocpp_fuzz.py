"""Bounded, seeded fuzzing of the OCPP-J endpoint of a real Daphne.

Every class of hostile input of issue 9 is generated with its expected outcome (the
OCPP-J CALLERROR code, the documented close, or silence for answers to no outstanding
call), sent over several concurrent connections, and checked frame by frame. Afterwards:
the chargers' connection state is right, Daphne's memory stayed bounded, and nothing
stored (chargers, connectors, sessions, samples) changed.

Volume: EVCE_FUZZ_FRAMES (default 1,000 frames; the note of issue 9 records a longer run).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets

from chargers.models import Charger, Connector, RegistrationStatus
from tests.conftest import ServerPool, wait_until
from transactions.models import MeterSample, Transaction

SEED = 20261202
FRAMES = int(os.environ.get("EVCE_FUZZ_FRAMES", "1000"))
CONNECTIONS = 5
RSS_GROWTH_MAX_KB = 60_000
TIMEOUT_S = 10.0

STATUS = {"errorCode": "NoError", "status": "Available"}
BOOT = {"chargePointVendor": "V", "chargePointModel": "M"}


@dataclass(frozen=True)
class Case:
    """One frame and what must come back: ("error", code), ("close", code) or ("none", "")."""

    kind: str
    text: str
    expect: tuple[str, str]


def _call(uid: str, action: str, body: str) -> str:
    return f'[2,"{uid}","{action}",{body}]'


def generate(rng: random.Random, uid: str) -> Case:
    """One hostile frame of a class drawn at random, with its expected answer."""
    kind = rng.choice(["nonfinite", "nul", "surrogate", "deep", "negative", "hugeint", "enum", "unsolicited",
                       "noid", "unknown_action", "server_action", "missing", "wrongtype", "bigstring",
                       "garbage", "badtype", "badanswer"])
    if kind == "nonfinite":
        value = rng.choice(["NaN", "Infinity", "-Infinity", "1e309", "-1e400", "1E999"])
        return Case(kind, _call(uid, "Heartbeat", f'{{"x":{value}}}'), ("error", "FormationViolation"))
    if kind == "nul":
        where = rng.choice(["chargePointVendor", "chargePointModel"])
        body = dict(BOOT, **{where: "A" + "\u0000" + "B" * rng.randint(1, 5)})  # inside: refused
        return Case(kind, _call(uid, "BootNotification", json.dumps(body)), ("error", "PropertyConstraintViolation"))
    if kind == "surrogate":
        body = json.dumps(dict(BOOT, chargePointModel="M")).replace('"M"', f'"M\\u{rng.randint(0xD800, 0xDFFF):04x}"')
        return Case(kind, _call(uid, "BootNotification", body), ("error", "PropertyConstraintViolation"))
    if kind == "deep":
        depth = rng.choice([17, 50, 900, 5_000, 100_000])
        return Case(kind, _call(uid, "Heartbeat", '{"x":' + "[" * depth + "]" * depth + "}"),
                    ("error", "FormationViolation"))
    if kind == "negative":
        action = rng.choice(["StatusNotification", "MeterValues"])
        body = dict(STATUS, connectorId=-rng.randint(1, 2**31)) if action == "StatusNotification" else {
            "connectorId": -rng.randint(1, 2**31), "meterValue": [{"timestamp": "2026-01-01T00:00:00Z",
                                                                    "sampledValue": [{"value": "1"}]}]}
        return Case(kind, _call(uid, action, json.dumps(body)), ("error", "PropertyConstraintViolation"))
    if kind == "hugeint":
        number = rng.choice([2**31, 2**63, 2**64 + 1, -(2**63) - 1, 10**30])
        return Case(kind, _call(uid, "StatusNotification", json.dumps(dict(STATUS, connectorId=number))),
                    ("error", "TypeConstraintViolation"))
    if kind == "enum":
        body = dict(STATUS, connectorId=1, status=rng.choice(["Flying", "available", "", "Charging "]))
        return Case(kind, _call(uid, "StatusNotification", json.dumps(body)), ("error", "PropertyConstraintViolation"))
    if kind == "unsolicited":
        size = rng.choice([0, 10, 100_000, 500_000])
        if rng.random() < 0.5:
            return Case(kind, json.dumps([3, f"x-{uid}", {"blob": "z" * size}]), ("none", ""))
        return Case(kind, json.dumps([4, f"x-{uid}", "GenericError", "", {"blob": "z" * size}]), ("none", ""))
    if kind == "badanswer":  # logged and dropped: a CALLERROR only ever answers a CALL
        value = rng.choice(["NaN", "1e309", '"a\\u0000b"', "[" * 40 + "]" * 40])
        return Case(kind, f'[{rng.choice([3, 4])},"a-{uid}",{{"x":{value}}}]', ("none", ""))
    if kind == "noid":
        text = rng.choice(['[2,12,"Heartbeat",{}]', '[2,"","Heartbeat",{}]', f'[2,"{"i" * 37}","Heartbeat",{{}}]',
                           '{"a":1}', "[2]", "null", '"text"', "[2,NaN,1]"])
        return Case(kind, text, ("close", "4002"))
    if kind == "unknown_action":
        name = "".join(rng.choice("abcXYZ_./") for _ in range(rng.randint(1, 60)))
        return Case(kind, _call(uid, "Fly" + json.dumps(name)[1:-1], "{}"), ("error", "NotImplemented"))
    if kind == "server_action":
        return Case(kind, _call(uid, rng.choice(["Reset", "RemoteStartTransaction", "SetChargingProfile"]), "{}"),
                    ("error", "NotSupported"))
    if kind == "missing":
        return Case(kind, _call(uid, "StatusNotification", '{"connectorId":1}'), ("error", "ProtocolError"))
    if kind == "wrongtype":
        body = dict(STATUS, connectorId=rng.choice(['"1"', "1.5", "true", "[]", "{}", "null"]))
        text = _call(uid, "StatusNotification", json.dumps(STATUS)[:-1] + f',"connectorId":{body["connectorId"]}}}')
        return Case(kind, text, ("error", "TypeConstraintViolation"))
    if kind == "bigstring":
        body = dict(BOOT, chargePointVendor="V" * rng.choice([21, 1000, 200_000]))
        return Case(kind, _call(uid, "BootNotification", json.dumps(body)), ("error", "TypeConstraintViolation"))
    if kind == "garbage":
        text = f'[2,"{uid}","Heartbeat",' + rng.choice(["{", '{"a":}', "{}}", "{'a':1}", "{}" + "]" * 3])
        return Case(kind, text, ("error", "FormationViolation"))
    return Case(kind, f'[{rng.choice([0, 1, 5, 9, -2])},"{uid}","Heartbeat",{{}}]', ("error", "FormationViolation"))


class Fuzzer:
    def __init__(self, url: str, cp_id: str) -> None:
        self.url, self.cp_id = url, cp_id
        self.ws: Any = None
        self.seen: dict[str, int] = {}

    async def connect(self) -> None:
        self.ws = await websockets.connect(f"{self.url}/ocpp/{self.cp_id}", subprotocols=["ocpp1.6"],
                                           max_size=None, open_timeout=TIMEOUT_S)

    async def answer_to(self, uid: str) -> list[Any]:
        """The next frame that answers `uid` (server CALLs in between are refused politely)."""
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT_S))
            if frame[0] == 2:
                await self.ws.send(json.dumps([4, frame[1], "NotSupported", "", {}]))
                continue
            assert frame[1] == uid, f"{self.cp_id}: answer for {frame[1]!r} while waiting for {uid!r}"
            return frame

    async def heartbeat(self, uid: str) -> None:
        await self.ws.send(_call(uid, "Heartbeat", "{}"))
        frame = await self.answer_to(uid)
        assert frame[0] == 3 and "currentTime" in frame[2], frame

    async def run(self, cases: list[Case]) -> None:
        await self.connect()
        for number, case in enumerate(cases):
            uid = re.search(r'"(f\d+-\d+)"', case.text)
            self.seen[case.kind] = self.seen.get(case.kind, 0) + 1
            await self.ws.send(case.text)
            what, code = case.expect
            if what == "error":
                assert uid is not None, case
                frame = await self.answer_to(uid.group(1))
                assert frame[0] == 4 and frame[2] == code, f"{case.kind}: {case.text[:120]} → {frame[:4]}"
                assert len(frame) == 5 and isinstance(frame[4], dict)
            elif what == "close":
                await asyncio.wait_for(self.ws.wait_closed(), TIMEOUT_S)
                assert str(self.ws.close_code) == code, f"{case.kind}: {case.text[:80]} → {self.ws.close_code}"
                await self.connect()
            if what != "close" and number % 10 == 0:
                await self.heartbeat(f"hb-{number}")  # the link is alive and nothing queued in between
        await self.heartbeat("hb-last")


def rss_kb(servers: ServerPool, url: str) -> int:
    port = url.rsplit(":", 1)[1]
    for process in servers._processes:
        if str(port) in process.args:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    raise AssertionError("no Daphne process for this URL")


def stored_state() -> tuple[object, ...]:
    return (
        list(Charger.objects.order_by("pk").values_list("charge_point_id", "vendor", "model", "registration_status",
                                                         "serial_number", "firmware_version")),
        list(Connector.objects.order_by("pk").values_list("charger_id", "connector_id", "status", "status_at")),
        Transaction.objects.count(), MeterSample.objects.count(),
    )


async def closed_without_subprotocol(url: str, cp_id: str, offered: list[str]) -> tuple[str | None, int | None]:
    """OCPP-J §3.2: the handshake completes without a subprotocol, then the server closes."""
    ws = await websockets.connect(f"{url}/ocpp/{cp_id}", subprotocols=offered or None, open_timeout=TIMEOUT_S)
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT_S)
    return ws.subprotocol, ws.close_code


async def handshake_status(url: str, path: str, headers: dict[str, str] | None = None) -> int:
    try:
        ws = await websockets.connect(url + path, subprotocols=["ocpp1.6"], additional_headers=headers or {},
                                      open_timeout=TIMEOUT_S)
    except websockets.InvalidStatus as refused:
        return int(refused.response.status_code)
    await ws.close()
    return 101


def test_fuzzed_frames_get_their_answers_and_change_nothing(servers, transactional_db):
    url = servers.daphne(OCPP_LOGIN_FAILURES_PER_ID="3", OCPP_LOGIN_FAILURES_PER_ADDRESS="1000")
    ids = [f"CP-FUZZ-{n}" for n in range(CONNECTIONS)]
    for cp_id in ids:
        Charger.objects.create(charge_point_id=cp_id, registration_status=RegistrationStatus.ACCEPTED)
    locked = Charger(charge_point_id="CP-FUZZ-LOCKED", registration_status=RegistrationStatus.ACCEPTED)
    locked.set_password("the-right-password-1")
    locked.save()
    rng = random.Random(SEED)
    plans = [[generate(rng, f"f{c}-{n}") for n in range(FRAMES // CONNECTIONS)] for c in range(CONNECTIONS)]
    # Handshakes: odd identities and wrong passwords (each refused, none registered).
    bad_paths = ["/ocpp/", "/ocpp/a/b", "/ocpp/a%2Fb", "/ocpp/a%252Fb", "/ocpp/..", "/ocpp/CP%00", "/ocpp/Q1?x=1",
                 "/ocpp/" + "L" * 49, "/ocpp/%FF", "/nowhere"] + [
        "/ocpp/" + "".join(rng.choice("AZ.-_") for _ in range(rng.randint(0, 8)))
        + rng.choice(["/", "%2F", "%252F", "%00", "%5C", "%23", "%3F", "%25", "%0A", "%7F", "%C3%A9", "?a=1"])
        + "Y" for _ in range(20)]
    before = stored_state()
    rss_before = rss_kb(servers, url)
    started = time.monotonic()

    async def fuzz() -> list[Fuzzer]:
        fuzzers = [Fuzzer(url, cp_id) for cp_id in ids]
        await asyncio.gather(*(fuzzer.run(plan) for fuzzer, plan in zip(fuzzers, plans, strict=True)))
        return fuzzers

    loop = asyncio.new_event_loop()
    fuzzers = loop.run_until_complete(fuzz())
    for path in bad_paths:
        assert loop.run_until_complete(handshake_status(url, path)) == 403, path
    wrong = {"Authorization": "Basic " + base64.b64encode(b"CP-FUZZ-LOCKED:wrong").decode()}
    statuses = [loop.run_until_complete(handshake_status(url, "/ocpp/CP-FUZZ-LOCKED", wrong)) for _ in range(6)]
    assert statuses == [403] * 6
    for offered in ([], ["ocpp2.0.1"], ["ocpp1.5", "wamp"]):
        assert loop.run_until_complete(closed_without_subprotocol(url, "CP-FUZZ-0", offered)) == (None, 4001)
    elapsed = time.monotonic() - started

    # Connection state: every fuzzed charger is still (or again) connected, the locked one never was.
    connected = set(Charger.objects.filter(connected=True).values_list("charge_point_id", flat=True))
    assert connected == set(ids)
    assert stored_state() == before
    assert not Charger.objects.exclude(charge_point_id__in=[*ids, "CP-FUZZ-LOCKED"]).exists()
    growth = rss_kb(servers, url) - rss_before
    assert growth < RSS_GROWTH_MAX_KB, f"Daphne grew by {growth} kB"

    async def close_all() -> None:
        await asyncio.gather(*(fuzzer.ws.close() for fuzzer in fuzzers))

    loop.run_until_complete(close_all())
    loop.close()
    wait_until(lambda: not Charger.objects.filter(connected=True).exists(), timeout_s=10)
    kinds: dict[str, int] = {}
    for fuzzer in fuzzers:
        for kind, count in fuzzer.seen.items():
            kinds[kind] = kinds.get(kind, 0) + count
    print(f"\nfuzz: {sum(kinds.values())} frames over {CONNECTIONS} connections + {len(bad_paths) + 9} handshakes "
          f"in {elapsed:.1f} s; Daphne RSS {growth:+d} kB; per class {dict(sorted(kinds.items()))}")
    assert len(kinds) == 17  # every class was sent
