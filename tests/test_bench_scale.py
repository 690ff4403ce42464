"""bench/bench_scale.py at small N: each measurement works and each figure lands beside its target.

The benchmark itself is not a timed test: these check that the storm, the overload reaction and
the channel-layer figures measure what they say, on 5 chargers.
"""

from __future__ import annotations

import asyncio
import resource
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_scale  # noqa: E402 - the benchmark lives in bench/
import loop_driver  # noqa: E402
import ocpp_load  # noqa: E402

from chargers.models import Charger, RegistrationStatus  # noqa: E402


def test_the_table_puts_each_figure_beside_its_target_and_says_whether_it_is_met():
    project = {"connected": 5000, "connect_boot_s": 40.0, "offered_per_s": 1000.0, "completed_per_s": 1000.0,
               "p50_ms": 9.0, "p95_ms": 40.0, "p99_ms": 300.0, "errors": 0, "samples_stored": 10,
               "samples_expected": 10, "samples_ok": True, "server_kb_per_charger": 45.0,
               "storm": {"all_booted_s": 31.0, "after_listen_s": 29.0, "failures_after_listen": 0},
               "overload": {"sessions": 5000, "all_acknowledged_s": 4.2, "p50_acknowledged_s": 2.0}}
    bare = {"connected": 5000, "connect_boot_s": 10.0, "completed_per_s": 1000.0, "p50_ms": 3.0, "p95_ms": 20.0,
            "p99_ms": 60.0, "errors": 0, "server_kb_per_charger": 40.0,
            "storm": {"all_booted_s": 12.0, "after_listen_s": 11.0, "failures_after_listen": 0}}
    text = bench_scale.table({"sizes": {"5000": {"project": project, "bare": bare}}})
    rows = {line.split("  ")[1].strip(): line for line in text.splitlines()[1:]}

    assert rows["MV/s done of 1,000 offered"].endswith("missed")  # p99 300 > 250 ms
    assert "5.0x" in rows["MeterValues p99 ms"]
    assert rows["server KB per charger"].endswith("MET") and "1.1x" in rows["server KB per charger"]
    assert rows["storm: all booted s (after listen)"].endswith("missed")  # 31 s > 30 s
    assert rows["overload: all 5000 acked s (p50)"].endswith("MET")  # 4.2 s <= 5 s at 5,000
    assert rows["connected (connect+boot s)"].endswith("MET")


def test_the_rate_is_met_by_what_was_sent_in_the_window_when_all_of_it_was_answered():
    base = {"connected": 5000, "offered_per_s": 1000.0, "p95_ms": 30.0, "p99_ms": 60.0, "errors": 0,
            "samples_ok": True}

    def verdict(**figures: object) -> str:
        text = bench_scale.table({"sizes": {"5000": {"project": {**base, **figures}}}})
        return next(line for line in text.splitlines() if "MV/s done" in line)

    # One answer of 15,000 arrived after the window closed: every MeterValues sent was answered.
    assert verdict(completed_per_s=999.9, sent_per_s=1000.0, answered_of_sent=True).endswith("MET")
    # Sent at the rate, but not all answered: what arrived is what was done.
    assert verdict(completed_per_s=990.0, sent_per_s=1000.0, answered_of_sent=False).endswith("missed")
    # The driver fell behind: fewer sent than offered.
    assert verdict(completed_per_s=950.0, sent_per_s=950.0, answered_of_sent=True).endswith("missed")
    # A run saved before the sent count existed: the answers in the window, as before.
    assert verdict(completed_per_s=1000.0).endswith("MET")
    # A saturated server: late chargers sent bursts in the window, answered seconds later.
    line = verdict(completed_per_s=1036.8, sent_per_s=4544.0, answered_of_sent=True)
    assert "1,037" in line and "4,544" not in line



def test_on_postgresql_the_database_servers_cpu_is_a_figure():
    """The web processes' CPU leaves out what their queries cost PostgreSQL (its own processes)."""
    figures = {"connected": 1000, "offered_per_s": 1000.0, "database_cpu_ms_per_meter_values": 1.5}
    rows = bench_scale.table({"sizes": {"1000": {"project": figures}}}).splitlines()
    assert any("PostgreSQL CPU ms per MeterValues" in row and "1.5" in row for row in rows)
    without = bench_scale.table({"sizes": {"1000": {"project": {"connected": 1000}}}})
    assert "PostgreSQL CPU" not in without
    if connection.vendor == "postgresql":  # its server runs on this machine in CI
        used = bench_scale.postgres_cpu_s()
        assert used and all(seconds >= 0 for seconds in used.values())

def test_memory_per_charger_past_the_smaller_size_leaves_the_fixed_costs_out():
    small = {"project": {"connected": 250, "server_rss_kb": 200_000, "server_kb_per_charger": 80.0},
             "bare": {"connected": 250, "server_rss_kb": 100_000, "server_kb_per_charger": 40.0}}
    large = {"project": {"connected": 1000, "server_rss_kb": 230_000, "server_kb_per_charger": 50.0},
             "bare": {"connected": 1000, "server_rss_kb": 127_000, "server_kb_per_charger": 37.0}}
    text = bench_scale.table({"sizes": {"250": small, "1000": large}})
    row = next(line for line in text.splitlines() if "past 250" in line)
    assert "40.0" in row and "36.0" in row and "1.1x" in row  # 30,000 KB / 750 and 27,000 KB / 750
    assert bench_scale.marginal_kb({"connected": 5}, large["project"]) is None  # no RSS: no figure


def test_the_sample_count_waits_for_the_write_buffer_and_says_how_long():
    counts = iter([100, 400, 500])

    async def step(*args: str) -> dict[str, Any]:
        assert args == ("count",)
        return {"samples": next(counts)}

    result = asyncio.run(bench_scale.samples_stored(step, expected=500, timeout_s=30))
    assert (result["samples_stored"], result["samples_ok"]) == (500, True)
    assert result["samples_stored_after_s"] >= 0.9  # two half-second waits

    stuck = asyncio.run(bench_scale.samples_stored(lambda *_: _count(7), expected=8, timeout_s=0.6))
    assert (stuck["samples_stored"], stuck["samples_ok"]) == (7, False)


async def _count(samples: int) -> dict[str, Any]:
    return {"samples": samples}


def test_the_file_descriptor_soft_limit_is_raised_to_the_hard_limit():
    limits = bench_scale.raise_fd_limit(needed=100)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == limits["soft"] == limits["hard"]
    assert limits["enough"] == 1


def test_channel_layer_figures_cover_both_layers_and_both_ways_of_sending():
    results = asyncio.run(bench_scale.channel_layers(settings.REDIS_URL, channels=5, messages=50,
                                                         paced_per_s=200, paced_messages=40))

    assert set(results) == {"core send", "core group_send", "pub/sub send", "pub/sub group_send"}
    for row in results.values():
        assert row["messages_per_s"] > 0 and 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]


@pytest.mark.slow
def test_connect_rounds_are_summed_up_by_median_and_range_and_the_medians_ratio_is_judged():
    rounds = [{"connect_boot_s": 3.0, "server_cpu_ms_per_connect": 3.5, "server_kb_per_charger": 52.0},
              {"connect_boot_s": 2.0, "server_cpu_ms_per_connect": 3.0, "server_kb_per_charger": 48.0},
              {"connect_boot_s": 2.4, "server_cpu_ms_per_connect": None, "server_kb_per_charger": 49.0},
              {"connect_boot_s": 2.6, "server_cpu_ms_per_connect": 3.1, "server_kb_per_charger": 47.0}]
    project = {"connected": 1000, "connect_rounds": rounds, **bench_scale.round_medians(rounds)}
    assert project["connect_boot_s_median"] == 2.5 and project["connect_boot_s_range"] == [2.0, 3.0]
    assert project["server_cpu_ms_per_connect_median"] == 3.1  # the round without the figure left out
    assert project["server_kb_per_charger_median"] == 48.5
    bare_rounds = [{"connect_boot_s": 1.5, "server_cpu_ms_per_connect": 2.0, "server_kb_per_charger": 40.0},
                   {"connect_boot_s": 1.8, "server_cpu_ms_per_connect": 2.2, "server_kb_per_charger": 41.0}]
    bare = {"connected": 1000, "connect_rounds": bare_rounds, **bench_scale.round_medians(bare_rounds)}

    text = bench_scale.table({"sizes": {"1000": {"project": project, "bare": bare}}})
    rows = {line.split("  ")[1].strip(): line for line in text.splitlines()[1:]}
    row = rows["connect+boot s, median of 4 (range)"]
    assert "2.5 (2.0–3.0)" in row and "1.6 (1.5–1.8)" in row
    assert "1.52x" in row and row.endswith("missed")  # 2.5 / 1.65 > 1.5
    assert rows["server KB per charger, median of 4"].endswith("MET")  # 48.5 <= 50

    bare["connect_boot_s_median"] = 1.7
    text = bench_scale.table({"sizes": {"1000": {"project": project, "bare": bare}}})
    assert "1.47x" in text and [line for line in text.splitlines() if "median of 4 (range)" in line][0].endswith("MET")


def test_more_connect_rounds_bring_a_fresh_fleet_up_on_a_fresh_server_each_time():
    first = {"connected": 5, "connect_failures": 0, "connect_boot_s": 9.0, "server_cpu_ms_per_connect": 1.0,
             "server_kb_per_charger": 30.0}
    pair: dict[str, Any] = {"bare": dict(first)}
    args = bench_scale.parse_args(["--connect-rounds", "3", "--web-processes", "1"])
    asyncio.run(bench_scale.more_connect_rounds(pair, 5, args, backend=None))  # type: ignore[arg-type]
    rounds = pair["bare"]["connect_rounds"]
    assert len(rounds) == 3 and rounds[0]["connect_boot_s"] == 9.0  # the full run's round first
    assert all(r["connected"] == 5 and r["connect_failures"] == 0 and 0 < r["connect_boot_s"] < 9 for r in rounds[1:])
    assert pair["bare"]["connect_boot_s_range"][1] == 9.0
    assert pair["bare"]["connect_boot_s_median"] == sorted(r["connect_boot_s"] for r in rounds)[1]


def test_a_restarted_server_gets_every_charger_back_and_failures_after_listen_are_counted():
    server = bench_scale.Server("bare", None)
    fleet = [ocpp_load.Charger(server.url, f"STORM-{n}") for n in range(5)]

    async def scenario() -> dict[str, Any]:
        server.start()
        await bench_scale._listening(server.port)
        await ocpp_load.bring_up(fleet, 10.0)
        try:
            return await bench_scale.storm(server, fleet, timeout_s=30)
        finally:
            for charger in fleet:
                await charger.ws.close()

    try:
        result = asyncio.run(scenario())
    finally:
        server.stop()
    assert result["reconnected"] == 5 and result["failures_after_listen"] == 0
    assert 0 < result["listen_after_s"] <= result["all_booted_s"] < 30
    assert result["after_listen_s"] == pytest.approx(result["all_booted_s"] - result["listen_after_s"], abs=0.02)


@pytest.mark.slow
def test_the_overload_reaction_waits_for_every_charger_to_acknowledge_its_lower_profile(servers, transactional_db):
    url = servers.daphne(BADGES_ALLOW_CONCURRENT_TX="true") + "/ocpp"
    loop_driver.setup(5)  # root zone of 5 x 32 A, the BENCH badge
    for n in range(5):
        Charger.objects.create(charge_point_id=f"OVER-{n}", registration_status=RegistrationStatus.ACCEPTED)
    fleet = [ocpp_load.Charger(url, f"OVER-{n}") for n in range(5)]

    def in_thread(function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        finally:
            connection.close()

    async def step(name: str, *args: str) -> dict[str, Any]:
        if name == "converge":
            return dict(await asyncio.to_thread(in_thread, loop_driver.converge, 8, 10.0))
        return dict(await asyncio.to_thread(in_thread, loop_driver.cut, float(args[1]), float(args[3])))

    async def scenario() -> dict[str, Any]:
        await ocpp_load.bring_up(fleet, 10.0)
        try:
            return await bench_scale.overload(step, fleet, cut=0.25, follow_s=0)
        finally:
            for charger in fleet:
                await charger.ws.close()

    result = asyncio.run(scenario())

    assert result["sessions"] == 5 and result["acknowledged"] == 5
    assert result["all_acknowledged_s"] is not None and 0 < result["all_acknowledged_s"] < 10
    share = 5 * 32 * 0.25 / 5
    assert all(charger.profiles and charger.profiles[-1][1] <= share + 0.1 for charger in fleet)
