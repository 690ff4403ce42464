"""Celery tasks of load management. Beat fires `control_tick` every second; the task itself
runs the loop only when the site's loop period has elapsed, so the period is an admin setting.

Never two ticks at once, never a lost re-balance:
- the tick holds a short Redis lease, renewed by a thread while the tick runs, so a worker killed
  in the middle of a tick blocks the loop for LEASE_S seconds at most, not minutes;
- a re-balance request (a session started or stopped, a charger confirmed a lower limit) sets a
  flag *before* trying the lease; the holder looks at the flag *after* releasing it and runs
  again. Either the requester gets the lease or the holder sees the flag: requests coalesce
  but are never dropped.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import redis
from celery import shared_task
from django.conf import settings

from evce import clock
from loadmgmt import services
from loadmgmt.answers import AnswerRecorder
from loadmgmt.control import TickReport, run_tick
from loadmgmt.models import SiteSettings

logger = logging.getLogger(__name__)
LOCK_KEY = "evce:loadmgmt:tick-lock"
GATE_KEY = "evce:loadmgmt:tick-gate"
REQUEST_KEY = "evce:loadmgmt:rebalance-requested"
QUEUED_KEY = "evce:loadmgmt:rebalance-queued"
LEASE_S = 3.0  # a tick takes milliseconds to a second (it never waits on the network); renewed meanwhile
MAX_RERUNS = 5  # re-balances asked during a tick are served by this many immediate re-runs


_clients: dict[tuple[int, str], redis.Redis] = {}


def _redis() -> redis.Redis:
    """This process's client (its connection pool is reused: the Daphne process asks for a
    re-balance after answers arriving by the hundred). Per pid: a forked worker gets its own."""
    key = (os.getpid(), settings.REDIS_URL)
    client = _clients.get(key)
    if client is None:
        client = _clients.setdefault(key, redis.Redis.from_url(settings.REDIS_URL))
    return client


@shared_task
def control_tick(force: bool = False) -> dict[str, Any] | None:
    """Run one loop tick unless one is running (never overlap) or the period has not elapsed."""
    client = _redis()
    if force:
        client.set(REQUEST_KEY, "1")
        client.delete(QUEUED_KEY)  # from now on a new request queues another run (see rebalance_soon)
    else:
        period_ms = SiteSettings.load().loop_period_s * 1000
        if not client.set(GATE_KEY, "1", nx=True, px=period_ms):
            return None
    report: TickReport | None = None
    for _ in range(MAX_RERUNS):
        ran = _tick_under_lease(client)
        report = ran or report
        if ran is None or not client.get(REQUEST_KEY):
            break
    return None if report is None else report.__dict__


class Lease:
    """The loop's Redis lock, renewed every LEASE_S / 3 by a thread for as long as it is held.

    The thread dies with the process: a worker killed mid-tick stops renewing, and the next tick
    can run LEASE_S seconds later.
    """

    def __init__(self, client: redis.Redis) -> None:
        # Not thread-local: the renewing thread must see the token the acquiring thread got.
        self.lock = client.lock(LOCK_KEY, timeout=LEASE_S, blocking=False, thread_local=False)
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="tick-lease", daemon=True)

    def acquire(self) -> bool:
        if not self.lock.acquire():
            return False
        self._renewer.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_S / 3):
            try:
                self.lock.reacquire()
            except redis.exceptions.RedisError:
                logger.warning("control tick: could not renew the loop's lease")
                return

    def release(self) -> None:
        self._stop.set()
        if self._renewer.is_alive():
            self._renewer.join()
        try:
            self.lock.release()
        except redis.exceptions.LockError:
            logger.warning("control tick outlived its %s s lease", LEASE_S)


def _tick_under_lease(client: redis.Redis) -> TickReport | None:
    lease = Lease(client)
    if not lease.acquire():
        logger.debug("control tick: another tick is running; it will serve the pending request")
        return None
    try:
        client.delete(REQUEST_KEY)
        return run_tick(clock.now())
    finally:
        lease.release()


# A queued re-balance older than this is pointless: a periodic tick has run since.
REBALANCE_EXPIRES_S = 10


def rebalance_soon() -> None:
    """Ask for an immediate tick (a session started or stopped, a lower limit came into force).

    Requests coalesce: a run is queued only when none is queued yet (a limit cut brings hundreds
    of answers within a second, each asking; one Celery message each cost the process holding
    the websockets a sixth of its time). None is lost: the request flag is set first, and the
    queued run clears the queued mark before it reads the flag (its tick then sees every answer
    recorded before the request); a request arriving after that queues the next run. A run
    lost with the broker leaves its mark for REBALANCE_EXPIRES_S at most; periodic ticks serve
    the flag meanwhile.
    """
    client = _redis()
    client.set(REQUEST_KEY, "1")
    if not client.set(QUEUED_KEY, "1", nx=True, ex=REBALANCE_EXPIRES_S):
        return  # a run is queued and has not started: it will see this request
    try:
        control_tick.apply_async(kwargs={"force": True}, expires=REBALANCE_EXPIRES_S)
    except Exception:
        client.delete(QUEUED_KEY)
        raise


class BackgroundRequest:
    """Runs `request` on a thread of its own when asked, never on the asker's thread; asks
    arriving before it starts are served by that one run, asks during a run by one more run.

    Why: the askers of a re-balance (the session-change listener, the answer recorder) run on
    the web process's database thread, right after their commit. `rebalance_soon` is two Redis
    round trips and sometimes a Celery send: there they held every charger's database work
    behind the network (~2 % of that thread in a 5,000-charger boot, py-spy), and for seconds
    when Redis is slow or away. A run still starts after the commit that asked for it, so the
    tick it queues sees what was recorded. An ask not yet run when the process stops is served
    by the next periodic tick.
    """

    def __init__(self, request: Callable[[], None], name: str) -> None:
        self._request = request
        self._name = name
        self._lock = threading.Lock()
        self._asked = threading.Condition(self._lock)
        self._pending = False
        self._thread: threading.Thread | None = None

    def ask(self) -> None:
        """Returns at once."""
        with self._lock:
            self._pending = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._asked.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending:
                    self._asked.wait()
                self._pending = False
            try:
                self._request()
            except Exception as error:  # noqa: BLE001 - broker or Redis down: the periodic tick serves it
                logger.warning("could not ask for a re-balance (%s); the next periodic tick will serve it",
                               type(error).__name__ if not str(error) else error)


# Re-balance requests of this process, off the thread that asks (looked up when run: tests patch it).
REBALANCE_REQUESTS = BackgroundRequest(lambda: rebalance_soon(), name="rebalance-requests")


def rebalance_for_sessions(charger_pks: Sequence[int]) -> None:
    """Session-change listener (chargers.hooks): sessions started or stopped on these chargers,
    one re-balance request for all of them (sent from a thread of its own: see BackgroundRequest)."""
    if charger_pks:
        REBALANCE_REQUESTS.ask()


def limit_outcome_then_rebalance(charger_pk: int, context: dict[str, Any], reply: dict[str, Any]) -> bool:
    """Call-outcome hook of the loop's profiles (see chargers.hooks), run where the websocket is.

    The answer is queued and recorded together with the others arriving meanwhile
    (`loadmgmt.answers`), which asks for a re-balance when a lower limit came into force: the
    increases that waited for it go out then rather than at the next period. Returns at once.
    """
    from loadmgmt.apply import outcome_of  # noqa: PLC0415 - apply imports the channel layer's commands

    outcome, detail = outcome_of(reply)
    ANSWERS.submit(services.Answer(services.SendTicket.from_context(context), outcome, detail))
    return False


ANSWERS = AnswerRecorder(on_lowered=REBALANCE_REQUESTS.ask)


@shared_task
def prune_setpoints() -> int:
    return services.setpoints_prune(now=clock.now())
