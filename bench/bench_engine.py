"""Benchmark of loadmgmt.engine.allocate(): time per control tick and peak memory.

Run from the project root: `python bench/bench_engine.py` (add `--quick` for a short run).
Scenarios are generated from a fixed seed, so two runs measure the same work. The capacities are
deliberately scarce (about 4.5 A per phase per session at the root, tighter zones below, some kW limits) so
that every tick exercises shedding, admission and water filling, not just a trivial fit.
Targets: < 5 ms per call at 250 sessions, < 50 ms at 5,000 sessions, on one core.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadmgmt.engine import Policy, Session, Zone, allocate, check_allocation  # noqa: E402

NOW = 1_700_000_000.0
SESSIONS = (250, 1_000, 5_000)
TREES = ((20, 4), (100, 8))  # (zones, levels)
MODES = ("equal", "priority")


def build_tree(rng: random.Random, n_zones: int, levels: int, per_session_a: float, n_sessions: int) -> list[Zone]:
    """A tree of exactly `levels` levels: a spine to the bottom, the rest hung at random depths.

    Each board gets 45-80 % of its parent's amps (so children together oversubscribe the parent,
    as real distribution boards do) and a quarter of them also a kW limit.
    """
    root_a = per_session_a * n_sessions
    amps = {"z000": root_a}
    zones = [Zone(id="z000", capacity_a=(root_a,) * 3, capacity_w=root_a * 3 * 230 * 0.97, name="site")]
    depth = {"z000": 0}
    for i in range(1, n_zones):
        parent = zones[i - 1] if i < levels else rng.choice([z for z in zones if depth[z.id] < levels - 1])
        zid = f"z{i:03d}"
        amps[zid] = round(amps[parent.id] * rng.uniform(0.45, 0.8), 1)
        caps = tuple(round(amps[zid] * rng.uniform(0.9, 1.0), 1) for _ in range(3))
        watts = amps[zid] * 3 * 230 * 0.9 if rng.random() < 0.25 else None
        zones.append(Zone(id=zid, parent_id=parent.id, capacity_a=caps, capacity_w=watts, name=f"board-{i}"))
        depth[zid] = depth[parent.id] + 1
    return zones


def build_sessions(rng: random.Random, zones: list[Zone], n: int) -> list[Session]:
    """Mixed single/three-phase sessions with measured draws, VIPs, paused ones and holds."""
    sessions = []
    for i in range(n):
        paused = rng.random() < 0.2
        measured = None if paused or rng.random() < 0.5 else round(rng.uniform(3, 32), 1)
        sessions.append(
            Session(
                id=f"s{i:05d}",
                zone_id=rng.choice(zones).id,
                phases=(0, 1, 2) if rng.random() < 0.7 else (rng.randrange(3),),
                max_a=rng.choice((16.0, 20.0, 32.0)),
                charger_max_a=rng.choice((None, None, 16.0)),
                measured_a=measured,
                offered_a=None if measured is None else round(rng.uniform(6, 32), 1),
                vip=rng.random() < 0.1,
                energy_wh=round(rng.uniform(0, 40_000)),
                connected_at=NOW - rng.uniform(0, 36_000),
                paused=paused,
                state_since=NOW - rng.uniform(0, 3_600),
            )
        )
    return sessions


def scenario(n_sessions: int, n_zones: int, levels: int, seed: int = 7) -> tuple[list[Zone], list[Session]]:
    rng = random.Random(seed)  # noqa: S311 -- reproducible workload, not security
    zones = build_tree(rng, n_zones, levels, per_session_a=4.5, n_sessions=n_sessions)
    return zones, build_sessions(rng, zones, n_sessions)


def time_calls(zones: list[Zone], sessions: list[Session], policy: Policy, repeats: int) -> list[float]:
    allocate(zones, sessions, policy, NOW)  # warm-up
    samples = []
    for k in range(repeats):
        start = time.perf_counter()
        allocate(zones, sessions, policy, NOW + k)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def peak_memory_kib(zones: list[Zone], sessions: list[Session], policy: Policy) -> float:
    tracemalloc.start()
    allocate(zones, sessions, policy, NOW)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1024


def run(quick: bool) -> None:
    print(
        f"{'sessions':>8} {'zones':>5} {'levels':>6} {'mode':>8} {'running':>7} "
        f"{'median ms':>9} {'p95 ms':>7} {'peak KiB':>8}"
    )
    for n_zones, levels in TREES:
        for n in SESSIONS:
            zones, sessions = scenario(n, n_zones, levels)
            for mode in MODES:
                policy = Policy(mode=mode, last_rotation_at=NOW - 60)
                result = allocate(zones, sessions, policy, NOW)
                problems = check_allocation(zones, sessions, result)
                if problems:
                    raise SystemExit(f"unsafe allocation: {problems[:3]}")
                running = sum(not r.paused for r in result.limits.values())
                repeats = 5 if quick else max(20, 20_000 // n)
                samples = time_calls(zones, sessions, policy, repeats)
                p95 = statistics.quantiles(samples, n=20)[-1]
                peak = peak_memory_kib(zones, sessions, policy)
                print(
                    f"{n:>8} {n_zones:>5} {levels:>6} {mode:>8} {running:>7} "
                    f"{statistics.median(samples):>9.2f} {p95:>7.2f} {peak:>8.0f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions, for a smoke run")
    run(parser.parse_args().quick)


if __name__ == "__main__":
    main()
