"""Benchmark: poll many fake meters concurrently at a fixed period, report cycle times.

Each fake meter is its own pymodbus TCP server on 127.0.0.1 (a real socket, a
real Modbus stack), hosted by a child process so that the poller's event loop
is measured alone, as it would run in the controller. Meter types rotate over
the built-in register maps. Every cycle must return a reading for every meter;
failures are counted and printed.

    python bench/bench_meters.py                 # 50 meters, 1 s period, 10 cycles
    python bench/bench_meters.py --meters 50 --cycles 30 --period 1.0
    python bench/bench_meters.py --in-process    # servers in the same event loop
    python bench/bench_meters.py --silent 2      # 2 meters never answer: cycle ~ timeout
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere


def _meter_type(index: int) -> str:
    """Rotate over the built-in register maps so every layout is exercised."""
    from meters.registers import METER_TYPES

    keys = sorted(METER_TYPES)
    return keys[index % len(keys)]


async def _start_servers(count: int, silent: int = 0) -> list[Any]:
    """Start ``count`` fake meters, one server (one port) each; the first ``silent`` never answer."""
    from meters.registers import get_register_map
    from tests.meters_fakes import start_fake_meter, typical_values

    servers = []
    for index in range(count):
        register_map = get_register_map(_meter_type(index))
        values = typical_values(register_map)
        unit_id = 1 + index % 247
        servers.append(await start_fake_meter(register_map, values, unit_id=unit_id, silent=index < silent))
    return servers


def _serve_in_child(count: int, silent: int, connection: Any) -> None:
    """Child process: run the servers until the parent says stop."""

    async def run() -> None:
        servers = await _start_servers(count, silent)
        connection.send([server.port for server in servers])
        await asyncio.get_running_loop().run_in_executor(None, connection.recv)
        for server in servers:
            await server.stop()

    asyncio.run(run())


def _configs(ports: list[int], timeout_s: float) -> dict[str, Any]:
    """One MeterConfig per fake meter."""
    from meters.modbus import MeterConfig
    from meters.registers import get_register_map

    return {
        f"meter{index:02d}": MeterConfig(
            get_register_map(_meter_type(index)),
            host="127.0.0.1",
            port=port,
            unit_id=1 + index % 247,
            timeout_s=timeout_s,
        )
        for index, port in enumerate(ports)
    }


async def _poll_cycles(configs: dict[str, Any], cycles: int, period_s: float) -> tuple[list[float], int]:
    """Poll every ``period_s``; return cycle durations and the number of failed reads."""
    from meters.modbus import MeterReading, poll_meters

    loop = asyncio.get_running_loop()
    durations: list[float] = []
    failures = 0
    next_start = loop.time()
    for _ in range(cycles):
        await asyncio.sleep(max(0.0, next_start - loop.time()))
        started = loop.time()
        results = await poll_meters(configs, now=time.time())
        durations.append(loop.time() - started)
        failures += sum(not isinstance(result, MeterReading) for result in results.values())
        next_start = started + period_s
    return durations, failures


def _report(durations: list[float], failures: int, args: argparse.Namespace) -> None:
    """Print median / p95 / max cycle time in milliseconds."""
    ms = sorted(d * 1000 for d in durations)
    p95 = statistics.quantiles(ms, n=20, method="inclusive")[18] if len(ms) > 1 else ms[0]
    where = "same process" if args.in_process else "child process"
    print(
        f"meters={args.meters} (silent={args.silent}) servers={where} cycles={len(ms)} "
        f"period={args.period:g}s timeout={args.timeout:g}s failed_reads={failures}"
    )
    print(f"cycle time ms: median={statistics.median(ms):.1f} p95={p95:.1f} max={ms[-1]:.1f} min={ms[0]:.1f}")


async def _run_in_process(args: argparse.Namespace) -> tuple[list[float], int]:
    """Servers and poller share one event loop (pessimistic: both cost the same CPU)."""
    servers = await _start_servers(args.meters, args.silent)
    try:
        return await _poll_cycles(_configs([s.port for s in servers], args.timeout), args.cycles, args.period)
    finally:
        for server in servers:
            await server.stop()


def _run_with_child(args: argparse.Namespace) -> tuple[list[float], int]:
    """Servers in a child process, poller here."""
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    child = context.Process(target=_serve_in_child, args=(args.meters, args.silent, child_end), daemon=True)
    child.start()
    try:
        if not parent_end.poll(60):
            raise RuntimeError("fake meter servers did not start within 60 s")
        ports = parent_end.recv()
        return asyncio.run(_poll_cycles(_configs(ports, args.timeout), args.cycles, args.period))
    finally:
        parent_end.send("stop")
        child.join(10)
        if child.is_alive():
            child.terminate()


def main() -> None:
    """Parse arguments, run the benchmark, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--period", type=float, default=1.0, help="seconds between cycle starts")
    parser.add_argument("--timeout", type=float, default=2.0, help="per-meter timeout, seconds")
    parser.add_argument("--silent", type=int, default=0, help="how many meters never answer")
    parser.add_argument("--in-process", action="store_true", help="run the servers in the poller's event loop")
    args = parser.parse_args()
    if args.in_process:
        durations, failures = asyncio.run(_run_in_process(args))
    else:
        durations, failures = _run_with_child(args)
    _report(durations, failures, args)


if __name__ == "__main__":
    main()
