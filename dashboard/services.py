"""The dashboard's one write of its own: accepting a discovered charger into a zone.

Registration goes through `chargers.services.chargers_set_registration` (the admin action's
path) and the automatic configuration is queued exactly as the admin does; the zone is the
one extra field, set in the same transaction so a charger is never accepted without it.
"""

from __future__ import annotations

import logging

from django.db import transaction

from chargers import services as charger_services
from chargers.models import Charger, RegistrationStatus
from loadmgmt.models import Zone

logger = logging.getLogger(__name__)


def charger_accept_into_zone(*, charger_pk: int, zone: Zone | None) -> bool:
    """Accept the charger into `zone`; True when it was connected and its configuration got queued."""
    from chargers.tasks import configure_charger  # noqa: PLC0415 - Celery app only where needed

    with transaction.atomic():
        Charger.objects.filter(pk=charger_pk).update(zone=zone)
        charger_services.chargers_set_registration(charger_pks=[charger_pk], status=RegistrationStatus.ACCEPTED)
    if not Charger.objects.filter(pk=charger_pk, connected=True).exists():
        return False
    try:
        configure_charger.delay(charger_pk)
    except Exception:  # broker down: the charger is accepted anyway and configured at its next boot
        logger.warning("could not queue the configuration of charger %s", charger_pk, exc_info=True)
        return False
    return True
