"""Re-balance requests leave the asking thread (loadmgmt.tasks.BackgroundRequest): the askers run
on the web process's database thread (session changes, answers, an operator's VIP change, a
BEMS load push) or on its event loop (the CPO proxy), which must never wait on Redis or the broker."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any
from unittest import mock

import pytest

from chargers.models import Charger
from evce import clock
from loadmgmt import tasks
from loadmgmt.models import Zone, ZoneMode
from loadmgmt.services import zone_record_measurement
from loadmgmt.tasks import BackgroundRequest
from proxy import commands as proxy_commands
from tests.conftest import wait_until
from transactions.models import Transaction
from transactions.services import transaction_set_vip


def test_an_ask_returns_while_its_request_waits_and_asks_meanwhile_make_one_more_run():
    started, release = threading.Event(), threading.Event()
    runs: list[str] = []

    def slow_request() -> None:  # Redis slow to answer
        runs.append(threading.current_thread().name)
        started.set()
        release.wait(10)

    requests = BackgroundRequest(slow_request, name="test-requests")
    requests.ask()
    assert started.wait(5)
    for _ in range(50):
        requests.ask()  # each returns although the request in progress is still waiting
    assert runs == ["test-requests"] and not release.is_set()
    release.set()
    wait_until(lambda: len(runs) == 2)
    time.sleep(0.2)
    assert runs == ["test-requests", "test-requests"]  # fifty asks, one more run: after the first one's


def test_a_failing_request_is_logged_and_the_next_ask_runs_again(caplog):
    attempts: list[int] = []

    def broker_down() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("broker down")

    requests = BackgroundRequest(broker_down, name="test-failing")
    with caplog.at_level(logging.WARNING, logger="loadmgmt.tasks"):
        requests.ask()
        wait_until(lambda: any("broker down" in r.getMessage() for r in caplog.records))
    requests.ask()
    wait_until(lambda: len(attempts) == 2)


def test_a_session_change_asks_for_a_rebalance_from_another_thread():
    asked_on: list[str] = []
    with mock.patch("loadmgmt.tasks.rebalance_soon", lambda: asked_on.append(threading.current_thread().name)):
        tasks.rebalance_for_sessions([])
        tasks.rebalance_for_sessions([7, 8])
        wait_until(lambda: asked_on)
    assert asked_on == ["rebalance-requests"]
    assert threading.current_thread().name != "rebalance-requests"


def test_the_answer_recorder_asks_through_the_background_request():
    assert tasks.ANSWERS._on_lowered == tasks.REBALANCE_REQUESTS.ask


def _asks_recorded() -> tuple[list[str], Any]:
    """A patched `rebalance_soon` recording the thread each request runs on."""
    asked_on: list[str] = []
    record = lambda: asked_on.append(threading.current_thread().name)  # noqa: E731
    return asked_on, mock.patch("loadmgmt.tasks.rebalance_soon", record)


@pytest.mark.django_db
def test_a_rise_of_a_dynamic_zones_load_asks_from_another_thread_and_a_fall_does_not_ask(
        django_capture_on_commit_callbacks):
    zone = Zone.objects.create(name="Building", max_current_a=100, mode=ZoneMode.DYNAMIC)
    at = clock.now()
    asked_on, patched = _asks_recorded()
    with patched:
        with django_capture_on_commit_callbacks(execute=True):
            zone_record_measurement(zone=zone, at=at, current_a=(10.0, 10.0, 10.0))
        wait_until(lambda: asked_on)  # from nothing measured to 10 A: a rise
        with django_capture_on_commit_callbacks(execute=True) as more:
            zone_record_measurement(zone=zone, at=at + dt.timedelta(seconds=1), current_a=(5.0, 5.0, 5.0))
            zone_record_measurement(zone=zone, at=at + dt.timedelta(seconds=2), current_a=(5.5, 5.0, 5.0))
        time.sleep(0.3)
    assert asked_on == ["rebalance-requests"] and more == []  # a fall, and a rise under 1 A, ask nothing


@pytest.mark.django_db(transaction=True)
def test_a_rise_fed_inside_a_transaction_asks_once_it_commits_and_not_if_it_rolls_back():
    """A meter's reading is fed to its zone inside the meter's transaction: a tick queued before
    the commit would read the load from before the rise."""
    from django.db import transaction

    zone = Zone.objects.create(name="Building", max_current_a=100, mode=ZoneMode.DYNAMIC)
    at = clock.now()
    asked_on, patched = _asks_recorded()
    with patched:
        with transaction.atomic():
            zone_record_measurement(zone=zone, at=at, current_a=(10.0, 10.0, 10.0))
            time.sleep(0.3)
            assert asked_on == []  # not before the commit
        wait_until(lambda: asked_on)
        with pytest.raises(RuntimeError), transaction.atomic():
            zone_record_measurement(zone=zone, at=at + dt.timedelta(seconds=1), current_a=(40.0, 40.0, 40.0))
            raise RuntimeError("the meter's transaction fails")
        time.sleep(0.3)
    assert asked_on == ["rebalance-requests"]  # the rolled-back rise asked nothing


@pytest.mark.django_db
def test_an_operators_vip_change_asks_from_another_thread():
    charger = Charger.objects.create(charge_point_id="CP-VIP-ASK")
    session = Transaction.objects.create(charger=charger, connector_id=1, id_tag="TAG", start_time=clock.now())
    asked_on, patched = _asks_recorded()
    with patched:
        assert transaction_set_vip(transaction=session, vip=True, by="op")
        wait_until(lambda: asked_on)
    assert asked_on == ["rebalance-requests"]


def test_a_backend_profile_change_asks_without_waiting_on_the_request():
    started, release = threading.Event(), threading.Event()

    def hanging_request() -> None:  # the broker does not answer
        started.set()
        release.wait(10)

    with mock.patch("loadmgmt.tasks.rebalance_soon", hanging_request):
        began = time.monotonic()
        proxy_commands._rebalance()
        returned_after_s = time.monotonic() - began
        assert started.wait(5)
        release.set()
    assert returned_after_s < 1.0  # the proxy's command goes on while the request hangs
