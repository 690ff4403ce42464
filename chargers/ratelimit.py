"""Small in-process rate limiters: failed logins per charge point id and per address,
log lines per charger. Pure (the clock is passed in), bounded in memory.

In-process on purpose: each Daphne process protects its own database thread and its
own log; an attacker spreading over several processes gains at most their number.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable


class RateLimiter:
    """At most `limit` events per key in each `window_s` window (fixed windows)."""

    def __init__(
        self, *, limit: int, window_s: float, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._windows: dict[Hashable, tuple[float, int]] = {}

    def _current(self, key: Hashable) -> tuple[float, int]:
        now = self._clock()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self.window_s:
            return now, 0
        return start, count

    def allowed(self, key: Hashable) -> bool:
        """Would one more event for `key` stay within the limit? (Counts nothing.)"""
        return self._current(key)[1] < self.limit

    def hit(self, key: Hashable) -> bool:
        """Count one event for `key`; True when it is within the limit."""
        start, count = self._current(key)
        if key not in self._windows and len(self._windows) >= self.max_keys:
            self._forget_expired()
        self._windows[key] = (start, count + 1)
        return count < self.limit

    def reset(self, key: Hashable) -> None:
        self._windows.pop(key, None)

    def _forget_expired(self) -> None:
        now = self._clock()
        self._windows = {k: v for k, v in self._windows.items() if now - v[0] < self.window_s}
        if len(self._windows) >= self.max_keys:  # a flood of distinct keys: start over
            self._windows.clear()


class ThrottledLog:
    """One log line per event, at most `limit` per key and window; the next line that
    passes says how many were suppressed. Keeps a flood of bad frames from filling the
    disk while the first lines of each episode stay visible."""

    def __init__(self, logger: logging.Logger, *, limit: int = 5, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._limiter = RateLimiter(limit=limit, window_s=window_s, clock=clock)
        self._suppressed: dict[Hashable, int] = {}

    def warning(self, key: Hashable, message: str, *args: object) -> bool:
        """Log `message % args` unless `key` is over its limit; True when logged."""
        if not self._limiter.hit(key):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            if len(self._suppressed) > self._limiter.max_keys:
                self._suppressed.clear()
            return False
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += " (%d similar lines suppressed)"
            args = (*args, suppressed)
        self._logger.warning(message, *args)
        return True
