"""Link status in the admin and on the dashboard; one primary per charger."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, transaction

from chargers.models import Charger
from proxy.models import QueuedMessage, Role, UpstreamBackend, UpstreamLink

pytestmark = pytest.mark.django_db


@pytest.fixture
def link():
    charger = Charger.objects.create(charge_point_id="CP-ADM", connected=True)
    backend = UpstreamBackend.objects.create(name="CPO One", url="wss://cpo.example/ocpp", password="s3cret")
    link = UpstreamLink.objects.create(charger=charger, backend=backend, role=Role.PRIMARY,
                                       last_error="HTTP 401: the backend refused the credentials (check the password)")
    for n in range(3):
        QueuedMessage.objects.create(link=link, action="MeterValues", payload={"n": n},
                                     created_at=dt.datetime.now(dt.UTC))
    return link


def test_it_shows_each_links_state_queue_depth_and_last_error_in_the_admin(admin_client, link):
    page = admin_client.get("/admin/proxy/upstreamlink/").content.decode()
    assert "CP-ADM" in page and "HTTP 401: the backend refused the credentials" in page
    assert "not connected" in page and ">3<" in page
    page = admin_client.get(f"/admin/proxy/upstreambackend/{link.backend_id}/change/").content.decode()
    assert "queue depth" in page.lower() and "HTTP 401" in page
    assert admin_client.get(f"/admin/proxy/upstreamlink/{link.pk}/change/").status_code == 200
    # The links of one charger: the link list filtered by it.
    page = admin_client.get("/admin/proxy/upstreamlink/?q=CP-ADM").content.decode()
    assert "CPO One" in page


def test_the_dashboard_has_an_upstream_links_panel(admin_client, link):
    page = admin_client.get("/").content.decode()
    assert "Upstream links" in page and "CPO One" in page and "HTTP 401" in page


def test_a_charger_has_at_most_one_primary(link):
    other = UpstreamBackend.objects.create(name="CPO Two", url="ws://two.example/ocpp")
    with pytest.raises(IntegrityError), transaction.atomic():
        UpstreamLink.objects.create(charger=link.charger, backend=other, role=Role.PRIMARY)
    UpstreamLink.objects.create(charger=link.charger, backend=other, role=Role.MIRROR)
