"""The one clock of the project: patch `evce.clock.now` in tests instead of sleeping."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone


def now() -> dt.datetime:
    return timezone.now()
