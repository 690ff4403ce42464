"""evce.clock: the project's one clock reads what Django's would, without its per-call setting read."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.utils import timezone

from evce import clock


def test_the_clock_gives_the_aware_utc_moment_djangos_timezone_now_gives():
    assert settings.USE_TZ  # what the clock takes for granted
    before = timezone.now()
    moment = clock.now()
    after = timezone.now()
    assert moment.tzinfo is dt.UTC and moment.utcoffset() == dt.timedelta(0)
    assert before <= moment <= after
