"""Re-balance requests leave the asking thread (loadmgmt.tasks.BackgroundRequest): the askers run
on the web process's database thread, which must never wait on Redis or the broker."""

from __future__ import annotations

import logging
import threading
import time
from unittest import mock

from loadmgmt import tasks
from loadmgmt.tasks import BackgroundRequest
from tests.conftest import wait_until


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
