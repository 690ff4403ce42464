"""The Celery app `evce` and the one place where periodic schedules live."""

from __future__ import annotations

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evce.settings")

app = Celery("evce")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_process_init.connect
@signals.beat_init.connect
def _tune_gc(**_: object) -> None:
    """A worker's pool process (the loop's ticks: tens of thousands of objects each) and beat,
    once started: the collector tuned as in the web processes (evce/gctune.py)."""
    from django.conf import settings  # noqa: PLC0415 - Django is set up by now

    from evce import gctune  # noqa: PLC0415

    gctune.tune(settings.GC_THRESHOLDS)

app.conf.beat_schedule = {
    # Chargers whose websocket died without a close frame (power cut, crashed server
    # process) are shown offline once they miss a few heartbeats.
    "chargers-mark-silent-offline": {
        "task": "chargers.tasks.mark_silent_chargers_offline",
        "schedule": 60.0,
    },
    # The load-management loop: fired every second, runs at the site's loop period (admin
    # setting); `expires` drops ticks that queued up behind a slow one instead of bursting.
    "loadmgmt-control-tick": {
        "task": "loadmgmt.tasks.control_tick",
        "schedule": 1.0,
        "options": {"expires": 2},
    },
    # Setpoint history is kept for SiteSettings.setpoint_retention_days.
    "loadmgmt-prune-setpoints": {
        "task": "loadmgmt.tasks.prune_setpoints",
        "schedule": 3600.0,
    },
    # Modbus meters: fired every second; the task polls only the meters whose own poll period
    # (admin setting) has elapsed, never two polls at once (Redis lock); `expires` drops polls
    # that queued up behind a slow one.
    "meters-poll": {
        "task": "meters.tasks.poll_due_meters",
        "schedule": 1.0,
        "options": {"expires": 2},
    },
    # Meter history: writes the 1-minute average of meters whose minute ended without a newer
    # reading (a failing or disabled meter); running meters write theirs as they go.
    "meters-flush-history": {
        "task": "meters.tasks.flush_meter_history",
        "schedule": 60.0,
    },
    # Meter history is kept for each meter's history_retention_days.
    "meters-prune-history": {
        "task": "meters.tasks.prune_meter_history",
        "schedule": 3600.0,
    },
    # The OCPP message log is a maintenance aid, not an archive: keep it bounded.
    "chargers-prune-message-log": {
        "task": "chargers.tasks.prune_message_log",
        "schedule": 3600.0,
    },
    # Local authorization lists follow badge changes (pushed once changes have been quiet
    # for 10 s), lists that failed are retried after 10 min, and every list is checked
    # against the charger's version hourly. Cheap when nothing changed: two queries.
    "badges-sync-local-lists": {
        "task": "badges.tasks.sync_local_lists",
        "schedule": 30.0,
    },
    # Sessions a charger never stopped (it vanished, or forgot them) are closed once
    # TRANSACTIONS_STALE_AFTER_HOURS passed without news; a quarter-hour is precise enough.
    "transactions-close-stale": {
        "task": "transactions.tasks.close_stale_transactions",
        "schedule": 900.0,
    },
    # Raw meter samples are kept METER_SAMPLES_RAW_DAYS, then folded into per-minute rows
    # (README, "Meter sample retention"); hourly, at most 48 hours of samples per run.
    "transactions-compact-samples": {
        "task": "transactions.tasks.compact_meter_samples",
        "schedule": 3600.0,
    },
}
