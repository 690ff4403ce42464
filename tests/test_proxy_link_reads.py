"""Connect-time reads of chargers' upstream links: coalesced, so a reconnect storm costs a few queries."""

from __future__ import annotations

import asyncio
import threading

import pytest

from proxy import relay, services


@pytest.fixture(autouse=True)
def _no_connection_upkeep(monkeypatch):
    """The reads are faked: the database thread's connection (another test's) is not touched."""
    import channels.db

    monkeypatch.setattr(channels.db, "close_old_connections", lambda: None)


def test_chargers_connecting_together_are_read_together(monkeypatch):
    reads: list[list[int]] = []
    release = threading.Event()

    def link_configs_of(*, charger_pks: list[int]) -> dict[int, list[services.LinkConfig]]:
        reads.append(sorted(charger_pks))
        release.wait(5)  # the first read is slow: the others arrive meanwhile
        return {pk: [f"link of {pk}"] for pk in charger_pks if pk % 2 == 0}  # type: ignore[misc]

    monkeypatch.setattr(services, "link_configs_of", link_configs_of)

    async def storm() -> list[list[services.LinkConfig]]:
        first = asyncio.ensure_future(relay._link_reads().configs(0))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(relay._link_reads().configs(pk)) for pk in range(1, 50)]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(first, *rest)

    configs = asyncio.run(storm())
    assert reads == [[0], list(range(1, 50))]  # 50 connects, 2 queries: the first alone, then all the others
    assert configs == [[f"link of {pk}"] if pk % 2 == 0 else [] for pk in range(50)]


def test_a_failed_read_reaches_every_charger_of_its_batch_and_the_next_batch_reads_again(monkeypatch):
    calls = 0

    def link_configs_of(*, charger_pks: list[int]) -> dict[int, list[services.LinkConfig]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database away")
        return {}

    monkeypatch.setattr(services, "link_configs_of", link_configs_of)

    async def two_batches() -> list[object]:
        failed = await asyncio.gather(relay._link_reads().configs(1), relay._link_reads().configs(2),
                                      return_exceptions=True)
        return [*failed, await relay._link_reads().configs(3)]

    first, second, third = asyncio.run(two_batches())
    assert isinstance(first, RuntimeError) and isinstance(second, RuntimeError)
    assert third == []


def test_a_charger_connecting_twice_at_once_gets_its_links_both_times(monkeypatch):
    pk = 7
    monkeypatch.setattr(services, "link_configs_of", lambda *, charger_pks: {p: ["x"] for p in charger_pks})

    async def twice() -> list[list[services.LinkConfig]]:
        return await asyncio.gather(relay._link_reads().configs(pk), relay._link_reads().configs(pk))

    assert asyncio.run(twice()) == [["x"], ["x"]]


@pytest.mark.django_db
def test_a_site_without_enabled_links_is_told_by_one_exists_and_the_links_are_read_once_there_are(
        django_assert_num_queries):
    from chargers.models import Charger
    from proxy.models import Role, UpstreamBackend, UpstreamLink

    chargers = Charger.objects.bulk_create([Charger(charge_point_id=f"CP-{n}") for n in range(3)])
    pks = [charger.pk for charger in chargers]
    backend = UpstreamBackend.objects.create(name="CPO", url="ws://cpo.invalid/ocpp")
    UpstreamLink.objects.create(charger=chargers[0], backend=backend, role=Role.PRIMARY, enabled=False)
    for read in (lambda: services.link_configs_of(charger_pks=pks), services.link_configs_all):
        with django_assert_num_queries(1) as captured:  # the EXISTS only: no link enabled
            assert read() == {}
        assert "JOIN" not in captured.captured_queries[0]["sql"]  # not the joined read of the links
    UpstreamLink.objects.filter(charger=chargers[0]).update(enabled=True)
    with django_assert_num_queries(2):  # the EXISTS, then the links with their backends and chargers
        configs = services.link_configs_of(charger_pks=pks)
    assert list(configs) == [pks[0]] and configs[pks[0]][0].backend_name == "CPO"
    assert list(services.link_configs_all()) == [pks[0]]
