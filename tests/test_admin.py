"""The admin is the configuration UI: every page loads, validations speak clearly, actions work."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from chargers.models import Charger, OcppMessage, RegistrationStatus
from chargers.services import chargers_mark_silent_offline, message_log, message_log_prune
from loadmgmt.models import MAX_ZONE_DEPTH, Zone

pytestmark = pytest.mark.django_db

MODELS = [
    "chargers/charger", "chargers/connector", "chargers/ocppmessage", "chargers/autoconfigurationkey",
    "chargers/configurationkey", "badges/badge", "transactions/transaction", "transactions/metersample",
    "loadmgmt/zone", "loadmgmt/sitesettings", "loadmgmt/setpoint", "loadmgmt/limitstate",
]


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("root", "", "a-long-password")
    client.force_login(user)
    return client


@pytest.mark.parametrize("model", MODELS)
def test_every_changelist_loads(admin_client, model):
    Charger.objects.create(charge_point_id="CP-ADMIN")
    response = admin_client.get(f"/admin/{model}/", secure=True, follow=True)  # site settings: one form
    assert response.status_code == 200


def test_nothing_is_open_to_an_anonymous_user(client):
    for path in ["/admin/", "/admin/chargers/charger/"]:
        response = client.get(path, secure=True)
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]


def test_accepting_a_pending_charger_is_one_action(admin_client):
    charger = Charger.objects.create(charge_point_id="CP-WAIT")
    response = admin_client.post(reverse("admin:chargers_charger_changelist"),
                                 {"action": "accept_chargers", "_selected_action": [charger.pk]}, secure=True)
    assert response.status_code == 302
    charger.refresh_from_db()
    assert charger.registration_status == RegistrationStatus.ACCEPTED


def test_the_charger_password_is_stored_hashed(admin_client):
    charger = Charger.objects.create(charge_point_id="CP-PW")
    url = reverse("admin:chargers_charger_change", args=[charger.pk])
    data = {"registration_status": "accepted", "heartbeat_interval_s": 300, "rated_max_current_a": 32, "phases": 3,
            "supply_phase": 1, "min_current_a": 6, "new_password": "s3cret-passw0rd", "notes": "",
            "connectors-TOTAL_FORMS": 0, "connectors-INITIAL_FORMS": 0,
            "configuration-TOTAL_FORMS": 0, "configuration-INITIAL_FORMS": 0,
            "limit_states-TOTAL_FORMS": 0, "limit_states-INITIAL_FORMS": 0}
    response = admin_client.post(url, data, secure=True)
    assert response.status_code == 302, response.content.decode()[:2000]
    charger.refresh_from_db()
    assert charger.password_hash and "s3cret" not in charger.password_hash
    assert charger.check_password("s3cret-passw0rd")


def test_a_registration_changed_in_the_form_is_told_to_the_connected_charger(admin_client, monkeypatch):
    from chargers import services

    told = []
    monkeypatch.setattr(services, "registration_changed", lambda **kwargs: told.append(kwargs))
    charger = Charger.objects.create(charge_point_id="CP-FORM", registration_status=RegistrationStatus.ACCEPTED)
    data = {"registration_status": "rejected", "heartbeat_interval_s": 300, "rated_max_current_a": 32, "phases": 3,
            "supply_phase": 1, "min_current_a": 6, "notes": "",
            "connectors-TOTAL_FORMS": 0, "connectors-INITIAL_FORMS": 0,
            "configuration-TOTAL_FORMS": 0, "configuration-INITIAL_FORMS": 0,
            "limit_states-TOTAL_FORMS": 0, "limit_states-INITIAL_FORMS": 0}
    url = reverse("admin:chargers_charger_change", args=[charger.pk])
    assert admin_client.post(url, data, secure=True).status_code == 302
    assert told == [{"charger_pks": [charger.pk], "status": "rejected"}]
    data["notes"] = "a note, the status unchanged"
    assert admin_client.post(url, data, secure=True).status_code == 302
    assert len(told) == 1


def zone_form(name: str, parent: Zone | None, **extra) -> dict:
    data = {"name": name, "parent": parent.pk if parent else "", "mode": "static", "max_current_a": 63,
            "pv_phases": "123",
            "time_of_use-TOTAL_FORMS": 0, "time_of_use-INITIAL_FORMS": 0}
    data.update(extra)
    return data


def test_the_zone_tree_depth_is_limited_with_a_clear_error(admin_client):
    parent = None
    for level in range(MAX_ZONE_DEPTH):
        parent = Zone.objects.create(name=f"L{level}", parent=parent, max_current_a=63)
    response = admin_client.post(reverse("admin:loadmgmt_zone_add"), zone_form("Too deep", parent), secure=True)
    assert response.status_code == 200
    assert f"at most {MAX_ZONE_DEPTH} levels" in response.content.decode()
    assert not Zone.objects.filter(name="Too deep").exists()


def test_a_zone_needs_a_limit(admin_client):
    response = admin_client.post(reverse("admin:loadmgmt_zone_add"),
                                 zone_form("No limit", None, max_current_a=""), secure=True)
    assert "Give the zone a maximum current per phase" in response.content.decode()


def test_a_dynamic_zone_without_a_fallback_uses_the_sites():
    from evce import clock
    from loadmgmt.inputs import gather
    from loadmgmt.models import SiteSettings

    SiteSettings.objects.update_or_create(pk=1, defaults={"fallback_current_a": 12})
    Zone.objects.create(name="Dyn", mode="dynamic", max_current_a=63)
    capacity = gather(clock.now()).zones[0]
    assert capacity.fallback
    assert capacity.zone.capacity_a == (12, 12, 12)


def test_time_of_use_rules_are_validated(admin_client):
    data = zone_form("Peak zone", None, **{
        "time_of_use-TOTAL_FORMS": 1, "time_of_use-0-label": "peak", "time_of_use-0-weekdays": "0,1,9",
        "time_of_use-0-start_time": "17:00", "time_of_use-0-end_time": "20:00", "time_of_use-0-limit_percent": 50})
    response = admin_client.post(reverse("admin:loadmgmt_zone_add"), data, secure=True)
    assert "Use numbers 0 (Monday) to 6 (Sunday)" in response.content.decode()
    data["time_of_use-0-weekdays"] = "0,1,2,3,4"
    response = admin_client.post(reverse("admin:loadmgmt_zone_add"), data, secure=True)
    assert response.status_code == 302
    assert Zone.objects.get(name="Peak zone").time_of_use.get().weekday_set() == frozenset(range(5))


def test_a_zone_cannot_be_its_own_ancestor(admin_client):
    root = Zone.objects.create(name="Root", max_current_a=63)
    child = Zone.objects.create(name="Child", parent=root, max_current_a=32)
    url = reverse("admin:loadmgmt_zone_change", args=[root.pk])
    response = admin_client.post(url, zone_form("Root", child), secure=True)
    assert "loop in the zone tree" in response.content.decode()


def test_silent_chargers_are_marked_offline():
    now = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
    Charger.objects.create(charge_point_id="CP-QUIET", connected=True, channel_name="x", heartbeat_interval_s=60,
                           last_seen=now - dt.timedelta(minutes=5))
    Charger.objects.create(charge_point_id="CP-CHATTY", connected=True, channel_name="y", heartbeat_interval_s=60,
                           last_seen=now - dt.timedelta(seconds=30))
    assert chargers_mark_silent_offline(now=now) == ["CP-QUIET"]
    assert not Charger.objects.get(charge_point_id="CP-QUIET").connected


def test_the_message_log_is_bounded(settings):
    settings.OCPP_LOG_MAX_ROWS = 5
    now = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
    message_log(charge_point_id="CP", charger_pk=None, direction="in", now=now - dt.timedelta(days=90))
    for _ in range(8):
        message_log(charge_point_id="CP", charger_pk=None, direction="in", now=now)
    message_log_prune(now=now)  # the count cap may have done part of the work already
    assert OcppMessage.objects.count() == 5
    assert not OcppMessage.objects.filter(timestamp__lt=now).exists()


def test_a_restart_shows_no_charger_online():
    from django.core.management import call_command

    Charger.objects.create(charge_point_id="CP-GHOST", connected=True, channel_name="gone")
    call_command("ocpp_reset_connections", stdout=None)
    ghost = Charger.objects.get(charge_point_id="CP-GHOST")
    assert (ghost.connected, ghost.channel_name) == (False, "")


def test_setpoint_history_is_pruned_after_the_retention():
    from loadmgmt.models import Setpoint, SiteSettings
    from loadmgmt.services import setpoints_prune

    charger = Charger.objects.create(charge_point_id="CP-HIST")
    now = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
    SiteSettings.objects.update_or_create(pk=1, defaults={"setpoint_retention_days": 7})
    for age in (1, 6, 8, 30):
        Setpoint.objects.create(timestamp=now - dt.timedelta(days=age), charger=charger, connector_id=1, limit_a=6)
    assert setpoints_prune(now=now) == 2
    assert Setpoint.objects.count() == 2


def test_lists_show_times_to_the_second(admin_client):
    Charger.objects.create(charge_point_id="CP-TIME", last_seen=dt.datetime(2026, 11, 23, 14, 5, 7, tzinfo=dt.UTC))
    page = admin_client.get(reverse("admin:chargers_charger_changelist"), secure=True).content.decode()
    assert "2026-11-23 14:05:07" in page


def test_site_settings_open_as_one_form_created_if_missing(admin_client):
    from loadmgmt.models import SiteSettings

    SiteSettings.objects.all().delete()
    response = admin_client.get(reverse("admin:loadmgmt_sitesettings_changelist"), secure=True)
    settings = SiteSettings.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:loadmgmt_sitesettings_change", args=[settings.pk])
    assert admin_client.get(response["Location"], secure=True).status_code == 200


def test_a_viewer_opening_missing_site_settings_creates_nothing(client):
    from django.contrib.auth.models import Group

    from loadmgmt.models import SiteSettings

    SiteSettings.objects.all().delete()
    user = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)  # noqa: S106
    user.groups.add(Group.objects.get(name="viewer"))
    client.force_login(user)
    response = client.get(reverse("admin:loadmgmt_sitesettings_changelist"), secure=True)
    assert response.status_code in (200, 403) and not SiteSettings.objects.exists()


@pytest.mark.parametrize("model", ["chargers/ocppmessage", "loadmgmt/setpoint", "loadmgmt/limitstate"])
def test_logs_setpoints_and_limit_states_cannot_be_deleted_from_the_admin(admin_client, model):
    from loadmgmt.models import LimitState, Setpoint

    charger = Charger.objects.create(charge_point_id="CP-KEEP")
    OcppMessage.objects.create(timestamp=dt.datetime(2026, 11, 23, tzinfo=dt.UTC), charge_point_id="CP-KEEP",
                               direction="in")
    Setpoint.objects.create(timestamp=dt.datetime(2026, 11, 23, tzinfo=dt.UTC), charger=charger, connector_id=1,
                            limit_a=6)
    LimitState.objects.create(charger=charger, connector_id=1, purpose="session")
    page = admin_client.get(f"/admin/{model}/", secure=True).content.decode()
    assert "delete_selected" not in page
    app, name = model.split("/")
    record = {"ocppmessage": OcppMessage, "setpoint": Setpoint, "limitstate": LimitState}[name].objects.get()
    response = admin_client.post(f"/admin/{model}/", {"action": "delete_selected", "_selected_action": [record.pk],
                                                      "post": "yes"}, secure=True)
    assert response.status_code in (200, 302, 403)
    assert admin_client.get(f"/admin/{app}/{name}/{record.pk}/delete/", secure=True).status_code == 403
    assert type(record).objects.filter(pk=record.pk).exists()


def test_a_child_zone_larger_than_its_parent_is_saved_with_a_warning(admin_client):
    root = Zone.objects.create(name="Connection point", max_current_a=63, max_power_kw=40)
    data = zone_form("Level -1", root, max_current_a=80, max_power_kw=30)
    response = admin_client.post(reverse("admin:loadmgmt_zone_add"), data, secure=True, follow=True)
    page = response.content.decode()
    assert Zone.objects.filter(name="Level -1").exists()  # a warning, not an error
    assert "Level -1 (80 A) is larger than its parent Connection point (63 A)" in page
    assert "kW) is larger" not in page  # 30 kW fits in 40 kW
    # Lowering the parent below an existing child warns too.
    response = admin_client.post(reverse("admin:loadmgmt_zone_change", args=[root.pk]),
                                 zone_form("Connection point", None, max_current_a=100, max_power_kw=20),
                                 secure=True, follow=True)
    page = response.content.decode()
    assert "Level -1 (30 kW) is larger than its parent Connection point (20 kW)" in page
    assert "(80 A) is larger" not in page
    response = admin_client.post(reverse("admin:loadmgmt_zone_add"), zone_form("Level -2", root, max_current_a=32),
                                 secure=True, follow=True)
    assert "is larger than its parent" not in response.content.decode()


def test_the_charger_page_opens_with_its_draw_and_limit(admin_client):
    from evce import clock
    from loadmgmt.models import LimitState
    from transactions.models import MeterSample, Transaction

    now = clock.now()
    charger = Charger.objects.create(charge_point_id="CP-NOW", connected=True,
                                     registration_status=RegistrationStatus.ACCEPTED)
    tx = Transaction.objects.create(charger=charger, connector_id=1, id_tag="TAG-NOW", start_time=now,
                                    energy_wh=3200, last_sample_at=now)
    MeterSample.objects.create(transaction=tx, charger=charger, connector_id=1, timestamp=now,
                               measurand="Power.Active.Import", unit="W", value=7400)
    LimitState.objects.create(charger=charger, connector_id=1, purpose="session", transaction_id=tx.pk,
                              in_force_a=16, pending_a=10, wanted_a=10, binding="zone:Level -1 phase L1",
                              waiting="waiting for the charger's answer")
    page = admin_client.get(reverse("admin:chargers_charger_change", args=[charger.pk]), secure=True).content.decode()
    assert page.index("Drawing now") < page.index("field-registration_status")  # at the top
    assert f"7.4 kW, 3.20 kWh so far, session {tx.pk} (TAG-NOW)" in page
    assert "in force 16.0 A / pending 10.0 A / wanted 10.0 A — limited by zone:Level -1 phase L1; " \
           "waiting for the charger&#x27;s answer" in page


def test_a_disconnected_chargers_connectors_say_offline_not_their_last_status(admin_client):
    from chargers.models import Connector

    charger = Charger.objects.create(charge_point_id="CP-GONE", connected=False)
    Connector.objects.create(charger=charger, connector_id=1, status="Available")
    live = Charger.objects.create(charge_point_id="CP-HERE", connected=True)
    Connector.objects.create(charger=live, connector_id=1, status="Charging")
    page = admin_client.get(reverse("admin:chargers_charger_change", args=[charger.pk]), secure=True).content.decode()
    assert "Unavailable (offline)" in page and ">Available<" not in page
    for prefix in ("connectors", "configuration"):  # reported by the charger: no "+ Add another" row
        assert f'name="{prefix}-MAX_NUM_FORMS" value="0"' in page
    listing = admin_client.get(reverse("admin:chargers_connector_changelist"), secure=True).content.decode()
    cells = re.findall(r'class="field-current_status">([^<]*)<', listing)
    assert sorted(cells) == ["Charging", "Unavailable (offline)"]


CONFIGURATION_APPS = {"chargers", "loadmgmt", "meters", "badges", "transactions"}
# A field named with its unit must say it in its label: "Maximum current (A per phase)", not "Max current a".
UNIT_SUFFIXES = {"_a": "(A", "_kw": "(kW)", "_w": "(W)", "_wh": "(Wh)", "_v": "(V)", "_hz": "(Hz)", "_s": "(s)",
                 "_days": "(days)"}


def shown_fields() -> list[tuple[str, object]]:
    """(where, model field) for every model field an admin page or inline of the configuration apps shows."""
    from django.contrib import admin
    from django.core.exceptions import FieldDoesNotExist
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = get_user_model()(is_superuser=True, is_staff=True, is_active=True)
    found = []
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in CONFIGURATION_APPS:
            continue
        pages = [(model, [*model_admin.get_fields(request), *model_admin.get_readonly_fields(request),
                          *model_admin.list_display])]
        pages += [(inline.model, [*inline(model, admin.site).get_fields(request)]) for inline in model_admin.inlines]
        for page_model, names in pages:
            for name in names:
                try:
                    field = page_model._meta.get_field(name) if isinstance(name, str) else None
                except FieldDoesNotExist:
                    continue  # a method of the admin: it says what it shows itself
                if field is not None and not field.primary_key and not field.auto_created:
                    found.append((f"{page_model._meta.label}.{name}", field))
    return found


def test_every_field_the_admin_shows_has_a_help_text_and_its_unit_in_the_label():
    fields = shown_fields()
    assert len(fields) > 150
    assert not [where for where, field in fields if not field.help_text], "give these fields a help_text"
    wrong = [(where, str(field.verbose_name)) for where, field in fields
             for suffix, unit in UNIT_SUFFIXES.items()
             if field.name.endswith(suffix) and unit not in str(field.verbose_name)]
    assert not wrong, f"say the unit in these labels: {wrong}"


def test_labels_read_as_words_with_units(admin_client):
    page = admin_client.get(reverse("admin:loadmgmt_zone_add"), secure=True).content.decode()
    assert "Maximum current (A per phase)" in page and "Max current a" not in page
    page = admin_client.get(reverse("admin:loadmgmt_sitesettings_changelist"), secure=True, follow=True)
    assert "Control loop period (s)" in page.content.decode()
