"""Issue 10's scale benchmark in one command: every figure beside its target and the bare baseline.

For each size (default 250, 1,000, 5,000 chargers), against the project (fresh database,
`OCPP_UNKNOWN_CHARGERS=accept`) and against `bench/bare_server.py` (bare Daphne + `ocpp`
ChargePoint, no database), started the same way in the same invocation:

1. connect + boot N chargers (each starts a transaction); server memory per connected charger
   (RSS after − RSS before, divided by N); with `--connect-rounds K`, this phase is done K − 1
   more times per server, each on a fresh start, the servers' order alternated, and each
   figure of it gets its median and range over the K rounds (one round moves by ±20 %);
2. MeterValues at `--rate` (default: one per charger per `--period` s, at most `--max-rate`,
   1,000/s: the target's rate at 1,000 and 5,000 chargers) for `--seconds` after a warm-up of at
   least `--warmup` s that goes on until no server call has reached the fleet for `--quiet` s
   (the boot configuration and the first profiles are over; at most `--max-warmup` s):
   done/s, p50/p95/p99, errors; every sample counted in the database afterwards (project: 5 per
   MeterValues answered);
3. overload reaction (project only, sizes in `--overload-sizes`): with the control loop converged,
   the root zone limit drops to `--cut` of itself and one tick runs → time until every session's
   charger has answered a SetChargingProfile at or below its new share;
4. reconnect storm: the server is stopped and started again with the N chargers connected;
   they reconnect (first try after 0–1 s, then a jittered back-off of 1, 2, 4 … 16 s, 30 s
   handshake and BootNotification timeouts) → time until all are booted again
   (from the restart and from the moment the port listens), handshake failures after listen.

Then, once per invocation: the tick alone (`bench/bench_tick.py`) at `--tick-sizes` sessions,
and channel-layer delivery of commands (group_send vs send, channels-redis core layer vs
RedisPubSubChannelLayer). Backends: `--backend embedded` (SQLite + a private redis-server) or
`--backend postgres` (`--database-url`, default postgres://postgres@127.0.0.1:5432/evce_bench,
dropped and created afresh; `--redis-url`, default redis://127.0.0.1:6379/14, flushed).

    .venv/bin/python bench/bench_scale.py --backend embedded --sizes 250 1000 --json scale.json
    .venv/bin/python bench/bench_scale.py --backend postgres --sizes 250 --skip-storm

The soft file-descriptor limit is raised to the hard limit (each charger is one fd here and one
in the server; the server inherits the raised limit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import bench_ocpp  # noqa: E402 - helpers beside this script
import ocpp_load  # noqa: E402

from evce.launcher import shared_listen_socket  # noqa: E402 - the project's own, as bin/run shares it

BENCH_DIR = Path(__file__).resolve().parent
BASE_DIR = BENCH_DIR.parent
SAMPLES_PER_METER_VALUES = 5
TARGETS = {
    "connected": "5,000 connected chargers",
    "mv_rate": ">= 1,000 MV/s, p95 <= 50 ms, p99 <= 250 ms, 0 errors",
    "kb": "<= 50 KB/charger",
    "storm": "5,000 reconnected <= 30 s, 0 failures after listen",
    "overload": "<= 2 s at 250, <= 5 s at 5,000",
    "ratio": "project <= 1.5x bare",
}


# ---------------------------------------------------------------- environment
def raise_fd_limit(needed: int) -> dict[str, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; says whether `needed` fds fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return {"soft": soft, "hard": hard, "needed": needed, "enough": int(soft >= needed)}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Backend:
    name: str
    database_url: str
    redis_url: str
    work: Path
    redis: subprocess.Popen[bytes] | None = None
    settings: dict[str, str] = field(default_factory=dict)  # the project's extra environment (--set)

    def prepare(self) -> None:
        """A fresh, migrated database and an empty Redis database."""
        if self.database_url.startswith("postgres"):
            url = urlparse(self.database_url)
            base = ["-h", url.hostname or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres"]
            subprocess.run(["dropdb", "--if-exists", "--force", *base, url.path.lstrip("/")], check=True)  # noqa: S603,S607
            subprocess.run(["createdb", *base, url.path.lstrip("/")], check=True)  # noqa: S603,S607
        else:
            Path(urlparse(self.database_url).path).unlink(missing_ok=True)
        if self.redis is None and "127.0.0.1:0/" in self.redis_url:
            port = bench_ocpp._free_port()
            self.redis = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],  # noqa: S607
                                          stdout=subprocess.DEVNULL, cwd=self.work)
            self.redis_url = self.redis_url.replace("127.0.0.1:0/", f"127.0.0.1:{port}/")
            bench_ocpp._wait_for_port(port)
        import redis

        redis.Redis.from_url(self.redis_url).flushdb()
        # As bin/run installs the project: its bytecode and validators compiled before it starts.
        subprocess.run([sys.executable, "-m", "evce.precompile"], cwd=BASE_DIR, check=True)  # noqa: S603
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR,  # noqa: S603
                       env=self.env(), check=True)

    def env(self, **extra: str) -> dict[str, str]:
        return dict(os.environ, DATABASE_URL=self.database_url, REDIS_URL=self.redis_url,
                    DJANGO_SETTINGS_MODULE="evce.settings", EVCE_DATA_DIR=str(self.work),
                    OCPP_UNKNOWN_CHARGERS="accept", OCPP_REGISTRATIONS_PER_ADDRESS="1000000",
                    OCPP_LOGIN_FAILURES_PER_ADDRESS="1000000", BADGES_ALLOW_CONCURRENT_TX="true",
                    LOG_LEVEL="warning", HTTPS="false", **{**self.settings, **extra})

    def close(self) -> None:
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait(10)


@dataclass
class Server:
    """The Daphne process(es) of one server, restartable on the same port."""

    kind: str  # "project" or "bare"
    backend: Backend | None  # the project's database and Redis (none for the bare baseline)
    port: int = field(default_factory=bench_ocpp._free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    web_processes: int = 1  # several share one listening socket, as `WEB_PROCESSES` makes bin/run do

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    def start(self) -> None:
        # As `bin/run` starts Daphne (evce/launcher.py): a 4,096 backlog, and a websocket the
        # application has not accepted yet is dropped after WEBSOCKET_CONNECT_TIMEOUT_S (60 s),
        # not Daphne's 5 s default. Both servers get the same options.
        listener = None
        endpoint = f"tcp:port={self.port}:interface=127.0.0.1:backlog=4096"
        if self.web_processes > 1:
            listener = shared_listen_socket("127.0.0.1", self.port, 4096)
            endpoint = f"fd:fileno={listener.fileno()}"
        daphne = [sys.executable, "-m", "daphne", "-v", "0", "-e", endpoint,
                  "--websocket_connect_timeout", os.environ.get("WEBSOCKET_CONNECT_TIMEOUT_S", "60")]
        fds = (listener.fileno(),) if listener is not None else ()
        for _ in range(self.web_processes):
            if self.kind == "project":
                assert self.backend is not None  # noqa: S101
                self.processes.append(subprocess.Popen([*daphne, "evce.asgi:application"], cwd=BASE_DIR,  # noqa: S603
                                                       env=self.backend.env(), pass_fds=fds))
            else:
                self.processes.append(subprocess.Popen([*daphne, "bare_server:application"], cwd=BENCH_DIR,  # noqa: S603
                                                       pass_fds=fds))
        if listener is not None:
            listener.close()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes = []

    @property
    def pid(self) -> int:
        """The first process's (py-spy profiles it)."""
        return self.processes[0].pid

    def rss_kb(self) -> int:
        return sum(bench_ocpp._rss_kb(process.pid) for process in self.processes)

    def cpu_s(self) -> float:
        """CPU time (user + system) used so far by the server's processes."""
        return sum(process_cpu_s(process.pid) for process in self.processes)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (/proc/PID/stat fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_s() -> dict[int, float]:
    """CPU seconds of every PostgreSQL server process on this machine, by pid."""
    used = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    used[int(entry.name)] = process_cpu_s(int(entry.name))
            except OSError:
                continue  # gone meanwhile
    return used


async def cpu_in_window(server: Server, window_opened: asyncio.Event, seconds: float) -> dict[str, Any]:
    """CPU used by the server, by its PostgreSQL server when it has one (all PostgreSQL
    processes of this machine: the work its queries cost, which the web processes' figure
    leaves out) and by this driver during the measured window of `drive` (from when it
    opens, `seconds` long), and a py-spy profile of the server's first process over it when
    BENCH_PYSPY_DIR is set."""
    await window_opened.wait()
    spy = await start_py_spy(server, f"meter-values-{server.kind}-{len(server.processes)}.txt")
    on_postgres = server.backend is not None and server.backend.name == "postgres"
    database_from = postgres_cpu_s() if on_postgres else {}
    per_process_from = [process_cpu_s(process.pid) for process in server.processes]
    driver_from = time.process_time()
    await asyncio.sleep(seconds)
    per_process = [round(process_cpu_s(process.pid) - start, 2)
                   for process, start in zip(server.processes, per_process_from, strict=True)]
    used: dict[str, Any] = {"server_cpu_s": round(sum(per_process), 2),
                            "driver_cpu_s": round(time.process_time() - driver_from, 2)}
    if on_postgres:
        used["database_cpu_s"] = round(sum(cpu - database_from.get(pid, 0.0)
                                           for pid, cpu in postgres_cpu_s().items()), 2)
    if len(per_process) > 1:
        used["server_cpu_s_per_process"] = per_process
        used["descriptors_per_process"] = [len(os.listdir(f"/proc/{process.pid}/fd")) for process in server.processes]
    await stop_py_spy(spy)
    return used


async def start_py_spy(server: Server, name: str) -> asyncio.subprocess.Process | None:
    """With BENCH_PYSPY_DIR set: py-spy recording the server's first process into that folder."""
    if not os.environ.get("BENCH_PYSPY_DIR"):
        return None
    out = Path(os.environ["BENCH_PYSPY_DIR"]) / name
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(server.pid), "-o", str(out), "-f", "raw",
        "--nonblocking", "-t", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def stop_py_spy(spy: asyncio.subprocess.Process | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
        await spy.wait()


async def _listening(port: int, timeout_s: float = 120.0) -> float:
    """Wait until `port` accepts a TCP connection; returns that moment (monotonic)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return time.monotonic()
        except OSError:
            await asyncio.sleep(0.01)
    raise RuntimeError(f"nothing listening on {port}")


async def _project_step(backend: Backend, *args: str) -> dict[str, Any]:
    """Run bench/loop_driver.py with the backend's environment (the fleet keeps running meanwhile)."""
    process = await asyncio.create_subprocess_exec(sys.executable, str(BENCH_DIR / "loop_driver.py"), *args,
                                                   env=backend.env(), stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"loop_driver {' '.join(args)} failed ({process.returncode})")
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


# ---------------------------------------------------------------- the figures of one size
Step = Callable[..., Awaitable[dict[str, Any]]]


async def overload(step: Step, fleet: list[ocpp_load.Charger], cut: float, follow_s: float = 30.0,
                   server_pid: int | None = None) -> dict[str, Any]:
    """Converge the loop, lower the root zone, and time every charger's answer to its new profile.

    `step(name, *args)` runs a loop_driver step (`converge`, `cut --fraction F`) for the server
    (whose pid lets the driver profile it when BENCH_PYSPY_DIR is set).
    """
    converged = await step("converge")
    for charger in fleet:
        charger.profiles.clear()
    # The loop keeps ticking every loop period meanwhile, as beat would; the answers arrive during it.
    pid = ("--server-pid", str(server_pid)) if server_pid else ()
    cut_result = await step("cut", "--fraction", str(cut), "--follow", str(follow_s), *pid)
    cut_at, share = cut_result["cut_at"], cut_result["new_limit_a"] / max(1, len(fleet))
    deadline = time.time() + 10

    def acknowledged(charger: ocpp_load.Charger) -> float | None:
        times = [at for at, limit in charger.profiles if at >= cut_at and limit is not None and limit <= share + 0.1]
        return min(times) if times else None

    while time.time() < deadline and any(acknowledged(c) is None for c in fleet):
        await asyncio.sleep(0.05)
    answered = [at for at in (acknowledged(c) for c in fleet) if at is not None]
    return {"sessions": cut_result["sessions"], "converge_sent": converged["sent"], "tick_s": cut_result["tick_s"],
            "profiles_sent": cut_result["sent"], "sent_per_tick": cut_result.get("sent_per_tick"),
            "handovers": cut_result.get("handovers"), "limits_sent": cut_result.get("limits_sent"),
            "acknowledged": len(answered),
            "all_acknowledged_s": round(max(answered) - cut_at, 2) if len(answered) == len(fleet) else None,
            "p50_acknowledged_s": round(sorted(answered)[len(answered) // 2] - cut_at, 2) if answered else None}


async def storm(server: Server, fleet: list[ocpp_load.Charger], timeout_s: float) -> dict[str, Any]:
    """Restart the server under the connected fleet; every charger reconnects and boots again."""
    listen_at: float | None = None
    failures_before = failures_after = 0
    kinds: dict[str, int] = {}  # failures after listen, by exception
    booted: list[float] = []

    async def reconnect(charger: ocpp_load.Charger) -> None:
        nonlocal failures_before, failures_after
        await asyncio.sleep(random.uniform(0, 1))  # noqa: S311 - chargers notice the loss at different times
        backoff_s = 1.0
        while time.monotonic() < give_up_at:
            attempt_at = time.monotonic()
            try:
                await charger.connect(30.0)
                await charger.call("BootNotification", {"chargePointVendor": "Bench", "chargePointModel": "Load"},
                                   timeout_s=30.0)
                booted.append(time.monotonic())
                return
            except Exception as error:  # noqa: BLE001 - counted: before or after the port listened
                if listen_at is not None and attempt_at >= listen_at:
                    failures_after += 1
                    kinds[type(error).__name__] = kinds.get(type(error).__name__, 0) + 1
                else:
                    failures_before += 1
                if charger.ws is not None:
                    with contextlib.suppress(Exception):
                        await charger.ws.close()
                # What chargers do: retry with a growing, jittered back-off (1, 2, 4 … 16 s).
                await asyncio.sleep(backoff_s * random.uniform(0.5, 1.0))  # noqa: S311
                backoff_s = min(16.0, backoff_s * 2)

    server.stop()
    for charger in fleet:
        if charger.ws is not None:
            await charger.ws.close()
    restart_at = time.monotonic()
    give_up_at = restart_at + timeout_s
    server.start()
    tasks = [asyncio.ensure_future(reconnect(charger)) for charger in fleet]
    listen_at = await _listening(server.port)
    spy = await start_py_spy(server, f"storm-{server.kind}-{len(fleet)}-{len(server.processes)}.txt")
    await asyncio.gather(*tasks)
    await stop_py_spy(spy)
    done = len(booted) == len(fleet)
    return {"reconnected": len(booted), "all_booted_s": round(max(booted) - restart_at, 2) if done else None,
            "after_listen_s": round(max(booted) - listen_at, 2) if done else None,
            "listen_after_s": round(listen_at - restart_at, 2), "failures_after_listen": failures_after,
            "failure_kinds": kinds,
            "failures_before_listen": failures_before}


async def samples_stored(step: Step, expected: int, timeout_s: float = 30.0) -> dict[str, Any]:
    """Count the stored samples until all `expected` are there (or `timeout_s`): with
    OCPP_METER_VALUES_ANSWER=received a MeterValues is answered before its samples' batch is
    written, so the count waits for the write buffer's backlog. How long that took is a figure."""
    started = time.monotonic()
    while True:
        stored = int((await step("count"))["samples"])
        waited = time.monotonic() - started
        if stored >= expected or waited >= timeout_s:
            return {"samples_stored": stored, "samples_ok": stored == expected,
                    "samples_stored_after_s": round(waited, 1)}
        await asyncio.sleep(0.5)


async def connect_and_boot(server: Server, size: int) -> tuple[list[ocpp_load.Charger], dict[str, Any]]:
    """Start `server` and bring `size` chargers up on it (phase 1): the fleet, and its figures."""
    server.start()
    await _listening(server.port)
    await asyncio.sleep(1.0 if server.kind == "bare" else 3.0)  # settle (imports, first connections)
    idle_kb = server.rss_kb()
    fleet = [ocpp_load.Charger(server.url, f"BENCH-{n:05d}") for n in range(size)]
    spy = await start_py_spy(server, f"connect-{server.kind}-{size}-{len(server.processes)}.txt")
    cpu_before = server.cpu_s()
    result: dict[str, Any] = await ocpp_load.bring_up(fleet, 60.0)
    # What connecting and booting cost the server, per charger (the boot steps still running
    # after the last StartTransaction was answered are not in it).
    result["server_cpu_ms_per_connect"] = round(1000 * (server.cpu_s() - cpu_before) / size, 2)
    await stop_py_spy(spy)
    await asyncio.sleep(2.0)
    result["server_rss_kb"] = server.rss_kb()
    result["server_kb_per_charger"] = round((result["server_rss_kb"] - idle_kb) / size, 1)
    return fleet, result


# The figures of phase 1 that `--connect-rounds` measures again, and what a round keeps.
ROUND_FIGURES = ("connect_boot_s", "server_cpu_ms_per_connect", "server_kb_per_charger")
ROUND_KEYS = (*ROUND_FIGURES, "connected", "connect_failures")


async def connect_round(server: Server, size: int) -> dict[str, Any]:
    """Phase 1 alone on a freshly started server, which is stopped after."""
    fleet, result = await connect_and_boot(server, size)
    for charger in fleet:
        if charger.ws is not None:
            await charger.ws.close()
    server.stop()
    return {key: result[key] for key in ROUND_KEYS}


def round_medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure of `ROUND_FIGURES`: its median over the rounds, and its range."""
    summary: dict[str, Any] = {}
    for key in ROUND_FIGURES:
        values = sorted(r[key] for r in rounds if r.get(key) is not None)
        if values:
            summary[f"{key}_median"] = round(statistics.median(values), 2)
            summary[f"{key}_range"] = [values[0], values[-1]]
    return summary


async def one_size(server: Server, size: int, args: argparse.Namespace) -> dict[str, Any]:
    fleet, result = await connect_and_boot(server, size)
    rate = args.rate or min(size / args.period, args.max_rate)
    window_opened = asyncio.Event()
    cpu = asyncio.create_task(cpu_in_window(server, window_opened, args.seconds))
    result.update(await ocpp_load.drive([c for c in fleet if c.ws is not None], rate, args.seconds, args.warmup,
                                        quiet_s=args.quiet, max_warmup_s=args.max_warmup,
                                        window_opened=window_opened))
    result.update(await cpu)
    done = result["completed_per_s"] * args.seconds
    result["server_cpu_ms_per_meter_values"] = round(1000 * result["server_cpu_s"] / done, 3) if done else None
    if "database_cpu_s" in result:
        result["database_cpu_ms_per_meter_values"] = round(1000 * result["database_cpu_s"] / done, 3) if done else None
    if server.backend is not None:
        result["samples_expected"] = result["meter_values_answered"] * SAMPLES_PER_METER_VALUES
        result.update(await samples_stored(functools.partial(_project_step, server.backend),
                                           result["samples_expected"]))
        if size in args.overload_sizes:
            result["overload"] = await overload(functools.partial(_project_step, server.backend), fleet, args.cut,
                                                server_pid=server.pid)
    if not args.skip_storm:
        result["storm"] = await storm(server, fleet, args.storm_timeout)
    for charger in fleet:
        if charger.ws is not None:
            await charger.ws.close()
    server.stop()
    return result


# ---------------------------------------------------------------- once per invocation
def tick_alone(backend: Backend, sizes: list[int]) -> dict[str, Any]:
    """bench/bench_tick.py on its own throw-away database (SQLite, or the PostgreSQL one when chosen)."""
    env = dict(os.environ, LOG_LEVEL="warning", REDIS_URL=backend.redis_url)
    if backend.database_url.startswith("postgres"):
        env["DATABASE_URL"] = backend.database_url
        backend.prepare()  # an empty database again
    else:
        env.pop("DATABASE_URL", None)
    out = backend.work / "tick.json"
    subprocess.run([sys.executable, str(BENCH_DIR / "bench_tick.py"), "--chargers", *map(str, sizes),  # noqa: S603
                    "--repeat", "3", "--json", str(out)], env=env, check=True, stdout=subprocess.DEVNULL)
    return {size: {"tick_median_ms": row["total_median_ms"], "tick_max_ms": row["total_max_ms"],
                   "gather_median_ms": row["gather_median_ms"], "allocate_median_ms": row["allocate_median_ms"],
                   "cut_tick_ms": row["cut_tick_ms"]}
            for size, row in json.loads(out.read_text()).items()}


async def _deliver(
    layer: Any, names: list[str], group: bool, count: int, pace_s: float
) -> tuple[float, list[float], int]:
    """Send `count` messages round-robin to the receivers (every `pace_s`, 0: back to back).

    Returns the time taken, the latencies (ms, sorted) and how often the inbox was full.
    """
    from channels.exceptions import ChannelFull

    latencies: list[float] = []

    async def receive(channel: str, expected: int) -> None:
        for _ in range(expected):
            message = await layer.receive(channel)
            latencies.append(time.perf_counter() - message["sent"])

    receivers = [asyncio.ensure_future(receive(c, count // len(names))) for c in names]
    await asyncio.sleep(0.2)  # receivers subscribed
    started = time.perf_counter()
    full = 0
    for i in range(count // len(names) * len(names)):
        while True:
            message = {"type": "ocpp.call", "sent": time.perf_counter()}
            try:
                if group:
                    await layer.group_send(f"cp-{i % len(names)}", message)
                else:
                    await layer.send(names[i % len(names)], message)
                break
            except ChannelFull:  # the receiving process's inbox is at capacity: wait, send again
                full += 1
                await asyncio.sleep(0.005)
        if pace_s:
            await asyncio.sleep(max(0.0, started + (i + 1) * pace_s - time.perf_counter()))
    await asyncio.wait_for(asyncio.gather(*receivers), 60)
    return time.perf_counter() - started, sorted(v * 1000 for v in latencies), full


async def channel_layers(redis_url: str, channels: int = 200, messages: int = 2000,
                         paced_per_s: float = 200.0, paced_messages: int = 600) -> dict[str, Any]:
    """Commands to `channels` receivers (one per charger): send vs group_send, core vs pub/sub layer.

    Back to back (`messages`, for messages/s) and paced at `paced_per_s` (for the latency of a
    command when the layer is not saturated: what the control loop sees).
    """
    from channels_redis.core import RedisChannelLayer
    from channels_redis.pubsub import RedisPubSubChannelLayer

    results: dict[str, Any] = {}
    host = {"address": redis_url, "socket_timeout": 30}  # as evce/settings.py configures the layer
    factories: dict[str, Callable[[], Any]] = {
        "core": lambda: RedisChannelLayer(hosts=[host], prefix="bench-core", expiry=60, capacity=500),
        "pub/sub": lambda: RedisPubSubChannelLayer(hosts=[redis_url], prefix="bench-ps"),
    }
    for name, factory in factories.items():
        for group in (False, True):
            layer = factory()
            names = [await layer.new_channel() for _ in range(channels)]
            if group:
                for n, channel in enumerate(names):
                    await layer.group_add(f"cp-{n}", channel)
            elapsed, _, full = await _deliver(layer, names, group, messages, 0.0)
            _, paced, _ = await _deliver(layer, names, group, max(channels, paced_messages), 1 / paced_per_s)
            results[f"{name} {'group_send' if group else 'send'}"] = {
                "messages_per_s": round(messages // channels * channels / elapsed), "inbox_full": full,
                "paced_per_s": paced_per_s, "p50_ms": round(paced[len(paced) // 2], 2),
                "p95_ms": round(paced[int(len(paced) * 0.95)], 2), "p99_ms": round(paced[int(len(paced) * 0.99)], 2)}
            for cleanup in ("flush", "close_pools"):
                if hasattr(layer, cleanup):
                    await getattr(layer, cleanup)()
    return results


# ---------------------------------------------------------------- the table
def _sustained(p: dict[str, Any]) -> float:
    """MeterValues/s sustained: the rate sent within the measured window when every one of them
    was answered, else the answers that arrived within it (a run saved before the sent count
    existed has only those). Counting by arrival alone missed or gained one or two answers at
    the window's edges, and called 999.9/s of a 1,000/s offer all answered a miss. Not when far
    fewer answers arrived within the window than were sent in it: chargers late on a saturated
    server send their late MeterValues at once (4,544/s sent, 1,037/s answered in the window,
    each seconds later), and what was sent is then not what was done."""
    completed = float(p.get("completed_per_s") or 0.0)
    if "sent_per_s" in p and p.get("answered_of_sent") and completed >= 0.95 * float(p["sent_per_s"]):
        return float(p["sent_per_s"])
    return completed


def _driver_lag(figures: dict[str, Any]) -> str:
    """What the driver itself added to the latencies it measured (its event loop's lateness, its
    collector's pauses): a server is not slower than this shows."""
    if "driver_loop_lag_p99_ms" not in figures:
        return "-"
    return f"{_fmt(figures['driver_loop_lag_p99_ms'])} ({_fmt(figures.get('driver_gc_pause_s'))})"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def _quotient(project: Any, bare: Any) -> float | None:
    """project / bare, None unless both are figures (and bare's is not 0)."""
    if not isinstance(project, int | float) or not isinstance(bare, int | float) or not bare:
        return None
    return project / bare


def _ratio(project: Any, bare: Any, digits: int = 1) -> str:
    quotient = _quotient(project, bare)
    return "-" if quotient is None else f"{quotient:.{digits}f}x"


def _within_ratio(project: Any, bare: Any) -> bool | None:
    """Whether the project's figure is within the target's 1.5x of the bare server's (None: not both)."""
    quotient = _quotient(project, bare)
    return None if quotient is None else quotient <= 1.5


def _median_and_range(result: dict[str, Any], key: str) -> str:
    """'median (lowest–highest)' of a figure measured over `--connect-rounds`."""
    if f"{key}_median" not in result:
        return "-"
    low, high = result[f"{key}_range"]
    return f"{_fmt(result[f'{key}_median'])} ({_fmt(low)}–{_fmt(high)})"


def _status(ok: bool | None) -> str:
    return "-" if ok is None else ("MET" if ok else "missed")


def marginal_kb(smaller: dict[str, Any], larger: dict[str, Any]) -> float | None:
    """Server KB per charger between two sizes of one run (each size starts the servers afresh:
    the difference of their RSS after connecting leaves each process's fixed costs out)."""
    if "server_rss_kb" not in smaller or "server_rss_kb" not in larger:
        return None
    added = larger.get("connected", 0) - smaller.get("connected", 0)
    return round((larger["server_rss_kb"] - smaller["server_rss_kb"]) / added, 1) if added > 0 else None


def _warm_up(result: dict[str, Any]) -> str:
    return f"{_fmt(result.get('warmup_s'))} ({result.get('warmup_ended', '-')})" if result else "-"


def table(results: dict[str, Any]) -> str:
    """One row per figure: project, bare baseline, ratio, target, met?"""
    rows = [("size", "figure", "project", "bare", "ratio", "target", "")]
    previous: dict[str, Any] = {}
    for size, pair in results["sizes"].items():
        p, b = pair.get("project", {}), pair.get("bare", {})
        n = int(size)
        rows.append((size, "connected (connect+boot s)", f"{p.get('connected')} ({_fmt(p.get('connect_boot_s'))})",
                     f"{b.get('connected')} ({_fmt(b.get('connect_boot_s'))})",
                     _ratio(p.get("connect_boot_s"), b.get("connect_boot_s")), TARGETS["connected"],
                     _status(p.get("connected") == n if n >= 5000 else None)))
        if "connect_rounds" in p or "connect_rounds" in b:
            rounds = len(p.get("connect_rounds") or b.get("connect_rounds") or [])
            rows.append((size, f"connect+boot s, median of {rounds} (range)", _median_and_range(p, "connect_boot_s"),
                         _median_and_range(b, "connect_boot_s"),
                         _ratio(p.get("connect_boot_s_median"), b.get("connect_boot_s_median"), 2), TARGETS["ratio"],
                         _status(_within_ratio(p.get("connect_boot_s_median"), b.get("connect_boot_s_median")))))
            rows.append((size, f"server CPU ms per connect + boot, median of {rounds}",
                         _median_and_range(p, "server_cpu_ms_per_connect"),
                         _median_and_range(b, "server_cpu_ms_per_connect"),
                         _ratio(p.get("server_cpu_ms_per_connect_median"),
                                b.get("server_cpu_ms_per_connect_median"), 2), "", ""))
            rows.append((size, f"server KB per charger, median of {rounds}",
                         _median_and_range(p, "server_kb_per_charger"), _median_and_range(b, "server_kb_per_charger"),
                         _ratio(p.get("server_kb_per_charger_median"), b.get("server_kb_per_charger_median"), 2),
                         TARGETS["kb"], _status(p["server_kb_per_charger_median"] <= 50)
                         if "server_kb_per_charger_median" in p else "-"))
        mv_ok = None
        if p.get("offered_per_s", 0) >= 1000:
            mv_ok = bool(_sustained(p) >= 1000 and (p.get("p95_ms") or 1e9) <= 50
                         and (p.get("p99_ms") or 1e9) <= 250 and p.get("errors") == 0 and p.get("samples_ok"))
        p_rate, b_rate = (_sustained(p) if p else None), (_sustained(b) if b else None)
        rows.append((size, f"MV/s done of {_fmt(p.get('offered_per_s'))} offered", _fmt(p_rate), _fmt(b_rate),
                     _ratio(b_rate, p_rate),
                     TARGETS["mv_rate"], _status(mv_ok)))
        if "warmup_s" in p or "warmup_s" in b:
            rows.append((size, "warm-up s (ended by)", _warm_up(p), _warm_up(b), "", "", ""))
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            rows.append((size, f"MeterValues {key.replace('_', ' ')}", _fmt(p.get(key)), _fmt(b.get(key)),
                         _ratio(p.get(key), b.get(key)), "", ""))
        rows.append((size, "server CPU ms per connect + boot", _fmt(p.get("server_cpu_ms_per_connect")),
                     _fmt(b.get("server_cpu_ms_per_connect")),
                     _ratio(p.get("server_cpu_ms_per_connect"), b.get("server_cpu_ms_per_connect")), "", ""))
        rows.append((size, "server CPU ms per MeterValues", _fmt(p.get("server_cpu_ms_per_meter_values")),
                     _fmt(b.get("server_cpu_ms_per_meter_values")),
                     _ratio(p.get("server_cpu_ms_per_meter_values"), b.get("server_cpu_ms_per_meter_values")), "",
                     ""))
        if p.get("database_cpu_ms_per_meter_values") is not None:
            rows.append((size, "PostgreSQL CPU ms per MeterValues", _fmt(p["database_cpu_ms_per_meter_values"]),
                         "n/a", "", "", ""))
        rows.append((size, "driver CPU s in the window", _fmt(p.get("driver_cpu_s")), _fmt(b.get("driver_cpu_s")),
                     "", "", ""))
        rows.append((size, "driver loop lag p99 ms (GC pauses s)", _driver_lag(p), _driver_lag(b), "", "", ""))
        rows.append((size, "errors / samples stored (after s)", f"{p.get('errors')} / {p.get('samples_stored')} of "
                     f"{p.get('samples_expected')} ({_fmt(p.get('samples_stored_after_s'))})", f"{b.get('errors')} / -",
                     "", "0 errors, all stored",
                     _status(p.get("errors") == 0 and p.get("samples_ok")) if p else "-"))
        rows.append((size, "server KB per charger", _fmt(p.get("server_kb_per_charger")),
                     _fmt(b.get("server_kb_per_charger")),
                     _ratio(p.get("server_kb_per_charger"), b.get("server_kb_per_charger")), TARGETS["kb"],
                     _status(p.get("server_kb_per_charger", 1e9) <= 50) if p else "-"))
        if previous:
            # What each charger past the smaller size added, the processes' fixed costs left out.
            p_kb, b_kb = (marginal_kb(previous.get(kind, {}), pair.get(kind, {})) for kind in ("project", "bare"))
            rows.append((size, f"server KB per charger past {previous['size']}", _fmt(p_kb), _fmt(b_kb),
                         _ratio(p_kb, b_kb), "", ""))
        previous = {**pair, "size": size}
        ps, bs = p.get("storm") or {}, b.get("storm") or {}
        if ps or bs:
            storm_ok = None
            if ps and n >= 5000:
                storm_ok = ps.get("all_booted_s") is not None and ps["all_booted_s"] <= 30 \
                    and ps["failures_after_listen"] == 0
            rows.append((size, "storm: all booted s (after listen)",
                         f"{_fmt(ps.get('all_booted_s'))} ({_fmt(ps.get('after_listen_s'))})",
                         f"{_fmt(bs.get('all_booted_s'))} ({_fmt(bs.get('after_listen_s'))})",
                         _ratio(ps.get("all_booted_s"), bs.get("all_booted_s")), TARGETS["storm"], _status(storm_ok)))
            rows.append((size, "storm: failures after listen", _fmt(ps.get("failures_after_listen")),
                         _fmt(bs.get("failures_after_listen")), "", "0",
                         _status(ps.get("failures_after_listen") == 0) if ps else "-"))
        if p.get("overload"):
            o = p["overload"]
            limit = 2.0 if n <= 250 else 5.0
            ok = o["all_acknowledged_s"] is not None and o["all_acknowledged_s"] <= limit \
                if n in (250, 5000) else None
            rows.append((size, f"overload: all {o['sessions']} acked s (p50)",
                         f"{_fmt(o['all_acknowledged_s'])} ({_fmt(o['p50_acknowledged_s'])})", "n/a", "",
                         TARGETS["overload"], _status(ok)))
    for size, tick in results.get("tick", {}).items():
        rows.append((size, "tick alone median (max) ms", f"{tick['tick_median_ms']} ({tick['tick_max_ms']})",
                     "n/a", "", "", ""))
    for name, row in results.get("channel_layer", {}).items():
        rows.append(("", f"channel layer {name}", f"{row['messages_per_s']}/s max (inbox full {row['inbox_full']}x); "
                     f"at {row['paced_per_s']:g}/s p50 {row['p50_ms']} p99 {row['p99_ms']} ms", "", "", "", ""))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


# ---------------------------------------------------------------- main
async def run(args: argparse.Namespace, backend: Backend) -> dict[str, Any]:
    results: dict[str, Any] = {"backend": backend.name, "settings": backend.settings,
                               "load_average_start": load_average(),
                               "fd_limit": raise_fd_limit(2 * max(args.sizes, default=0) + 200), "sizes": {}}
    for size in args.sizes:
        pair: dict[str, Any] = {}
        for kind in args.only or (("project", "bare") if args.baseline else ("project",)):
            if kind == "project":
                backend.prepare()
                await _project_step(backend, "setup", "--chargers", str(size))
            started = time.monotonic()
            server = Server(kind, backend if kind == "project" else None, web_processes=args.web_processes)
            pair[kind] = await one_size(server, size, args)
            pair[kind]["run_s"] = round(time.monotonic() - started, 1)
            pair[kind]["load_average"] = load_average()
            print(f"{size} {kind}: {json.dumps({k: v for k, v in pair[kind].items() if k != 'output'})}",
                  file=sys.stderr, flush=True)
        await more_connect_rounds(pair, size, args, backend)
        results["sizes"][str(size)] = pair
        _save(args.json, results)
    if not args.skip_channel_layer:
        results["channel_layer"] = await channel_layers(backend.redis_url)
        _save(args.json, results)
    if args.tick_sizes:
        results["tick"] = tick_alone(backend, args.tick_sizes)
    results["load_average_end"] = load_average()
    return results


async def more_connect_rounds(pair: dict[str, Any], size: int, args: argparse.Namespace, backend: Backend) -> None:
    """Phase 1 again, `--connect-rounds` − 1 more times per server, each on a fresh start (and
    for the project a fresh database), the servers' order swapped from round to round; the
    first round is the full run's. A single connect + boot moves from run to run by ±20 % on
    this machine (its two cores are saturated by the servers, the fleet and the database), as
    much for the bare server as for the project: the medians and ranges say how far apart
    the two really are."""
    kinds = [kind for kind in ("project", "bare") if kind in pair]
    if args.connect_rounds <= 1 or not kinds:
        return
    rounds = {kind: [{key: pair[kind].get(key) for key in ROUND_KEYS}] for kind in kinds}
    for number in range(1, args.connect_rounds):
        for kind in kinds[::-1] if number % 2 else kinds:
            if kind == "project":
                backend.prepare()
                await _project_step(backend, "setup", "--chargers", str(size))
            server = Server(kind, backend if kind == "project" else None, web_processes=args.web_processes)
            rounds[kind].append(await connect_round(server, size))
            print(f"{size} {kind} connect round {number + 1}: {json.dumps(rounds[kind][-1])}", file=sys.stderr,
                  flush=True)
    for kind in kinds:
        pair[kind]["connect_rounds"] = rounds[kind]
        pair[kind].update(round_medians(rounds[kind]))


def _save(path: str | None, results: dict[str, Any]) -> None:
    """Results so far (a run cut short by its time box keeps what it measured)."""
    if path:
        Path(path).write_text(json.dumps(results, indent=2))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("embedded", "postgres"),
                        default=os.environ.get("BENCH_BACKEND", "embedded"))
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                                 "postgres://postgres@127.0.0.1:5432/evce_bench"))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    parser.add_argument("--sizes", type=int, nargs="*", default=[250, 1000, 5000])
    parser.add_argument("--rate", type=float, default=None, help="MeterValues/s offered (default: see --period)")
    parser.add_argument("--period", type=float, default=1.0,
                        help="seconds between a charger's MeterValues: rate = min(N / period, --max-rate)")
    parser.add_argument("--max-rate", type=float, default=1000.0, help="the target's 1,000 MeterValues/s")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=15.0,
                        help="seconds of MeterValues before the measured window (the least, with --quiet)")
    parser.add_argument("--quiet", type=float, default=5.0,
                        help="the warm-up goes on until no server call has reached the fleet for this long "
                             "(the boot configuration and the first profiles are over); 0: --warmup exactly")
    parser.add_argument("--max-warmup", type=float, default=180.0, help="the longest warm-up with --quiet")
    parser.add_argument("--overload-sizes", type=int, nargs="*", default=[250, 5000])
    parser.add_argument("--cut", type=float, default=0.25, help="root zone limit x this in the overload step")
    parser.add_argument("--tick-sizes", type=int, nargs="*", default=[250, 1000, 5000])
    parser.add_argument("--storm-timeout", type=float, default=180.0)
    parser.add_argument("--connect-rounds", type=int, default=1,
                        help="connect + boot this many times per size and server (fresh starts, order "
                             "alternated): medians and ranges beside the full run's figures")
    parser.add_argument("--skip-storm", action="store_true")
    parser.add_argument("--skip-channel-layer", action="store_true")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false")
    parser.add_argument("--only", nargs="+", choices=("project", "bare"),
                        help="run only these servers (e.g. a size too slow for both within one time box)")
    parser.add_argument("--web-processes", type=int, default=1,
                        help="Daphne processes per server sharing one socket (bin/run's WEB_PROCESSES), both servers")
    parser.add_argument("--set", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a setting of the project's processes, e.g. --set OCPP_METER_VALUES_ANSWER received")
    parser.add_argument("--json", help="write all results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="evce-scale-"))
    if args.backend == "postgres":
        backend = Backend("postgres", args.database_url, args.redis_url, work, settings=dict(args.set))
    else:
        backend = Backend("embedded", f"sqlite:///{work}/bench.sqlite3", "redis://127.0.0.1:0/0", work,
                          settings=dict(args.set))
    try:
        results = asyncio.run(run(args, backend))
    finally:
        backend.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"backend {results['backend']}; load average {results['load_average_start']} -> "
          f"{results['load_average_end']}; fd limit {results['fd_limit']}")
    print(table(results))
    _save(args.json, results)
    return results


if __name__ == "__main__":
    main()
