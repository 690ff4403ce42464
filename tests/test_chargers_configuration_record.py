"""Recording automatic configurations (chargers.services.configuration_outcomes_record)."""

from __future__ import annotations

import pytest

from chargers.models import Charger, ConfigurationKey
from chargers.services import ConfigurationOutcome, configuration_outcomes_record


@pytest.fixture
def chargers(db) -> list[Charger]:
    return [Charger.objects.create(charge_point_id=f"CP-CFG{i}") for i in range(3)]


def _stored(charger: Charger) -> dict[str, tuple[str, bool, str]]:
    return {row.key: (row.value, row.readonly, row.last_change_status)
            for row in ConfigurationKey.objects.filter(charger=charger)}


def test_changes_then_the_read_back_of_many_chargers_in_a_few_statements(chargers, django_assert_max_num_queries):
    ConfigurationKey.objects.create(charger=chargers[0], key="HeartbeatInterval", value="300")
    ConfigurationKey.objects.create(charger=chargers[1], key="MeterValueSampleInterval", value="60",
                                    last_change_status="Accepted")
    outcomes = [
        ConfigurationOutcome(charger.pk, (("HeartbeatInterval", "120", "Accepted"),
                                          ("MeterValuesSampledData", "Energy.Active.Import.Register", "Rejected")),
                             (("HeartbeatInterval", "120", False), ("MeterValueSampleInterval", "10", False),
                              ("ChargeProfileMaxStackLevel", "8", True)))
        for charger in chargers
    ]
    # SAVEPOINT/RELEASE, the SELECT, one UPDATE statement per column set, one INSERT.
    with django_assert_max_num_queries(7):
        configuration_outcomes_record(outcomes=outcomes)
    for charger in chargers:
        assert _stored(charger) == {
            "HeartbeatInterval": ("120", False, "Accepted"),
            "MeterValuesSampledData": ("", False, "Rejected"),  # refused: no value of ours
            "MeterValueSampleInterval": ("10", False, "Accepted" if charger == chargers[1] else ""),
            "ChargeProfileMaxStackLevel": ("8", True, ""),
        }


def test_what_the_charger_reads_back_wins_over_what_was_sent(chargers):
    configuration_outcomes_record(outcomes=[ConfigurationOutcome(
        chargers[0].pk, (("HeartbeatInterval", "120", "Accepted"),), (("HeartbeatInterval", "90", False),))])
    assert _stored(chargers[0]) == {"HeartbeatInterval": ("90", False, "Accepted")}


def test_a_failed_read_back_keeps_the_outcomes_and_overlong_values_are_cut_to_the_columns(chargers):
    configuration_outcomes_record(outcomes=[ConfigurationOutcome(
        chargers[0].pk, (("K" * 80, "v" * 900, "Accepted"), ("HeartbeatInterval", "120", "Failed: timeout")), None)])
    stored = _stored(chargers[0])
    assert stored["K" * 50] == ("v" * 500, False, "Accepted")
    assert stored["HeartbeatInterval"] == ("", False, "Failed: timeout")
