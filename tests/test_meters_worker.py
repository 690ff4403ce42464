"""The meter tasks as deployed: scheduled by beat, run by a real Celery worker process."""

from __future__ import annotations

import pytest

from evce.celery import app
from loadmgmt.models import Zone
from meters import tasks
from meters.models import Meter
from meters.registers import get_register_map
from tests.conftest import wait_until
from tests.meters_lab import dynamic_zone, make_meter

IEM = get_register_map("iem3x5x")


def test_every_meters_schedule_names_a_registered_task():
    app.loader.import_default_modules()
    entries = {name: entry for name, entry in app.conf.beat_schedule.items() if name.startswith("meters-")}
    assert set(entries) == {"meters-poll", "meters-flush-history", "meters-prune-history"}
    for entry in entries.values():
        assert entry["task"] in app.tasks


@pytest.mark.slow
def test_a_worker_polls_the_meters_and_feeds_the_zone(celery_worker, transactional_db, lab):
    zone = dynamic_zone()
    make_meter(lab, lab.meter(IEM), "Incomer", role="zone_total", zone=zone, timeout_s=2.0)
    celery_worker()

    tasks.poll_due_meters.delay()

    fed = wait_until(lambda: Zone.objects.filter(pk=zone.pk, measured_at__isnull=False).first(), timeout_s=30)
    assert fed.measured_power_kw == pytest.approx(21.06)
    assert Meter.objects.get().consecutive_failures == 0
