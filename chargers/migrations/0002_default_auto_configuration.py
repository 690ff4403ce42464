"""Default automatic configuration: what load management needs from every charger."""

from django.db import migrations

DEFAULT_KEYS = [
    ("HeartbeatInterval", "300", "Seconds between heartbeats; also how fast a dead link is noticed."),
    ("MeterValueSampleInterval", "10", "Seconds between MeterValues during a transaction."),
    (
        "MeterValuesSampledData",
        "Energy.Active.Import.Register,Power.Active.Import,Current.Import",
        "Energy, power and per-phase current: the inputs of load management.",
    ),
]


def add_defaults(apps, schema_editor):
    model = apps.get_model("chargers", "AutoConfigurationKey")
    for key, value, description in DEFAULT_KEYS:
        model.objects.get_or_create(key=key, defaults={"value": value, "description": description})


def remove_defaults(apps, schema_editor):
    model = apps.get_model("chargers", "AutoConfigurationKey")
    model.objects.filter(key__in=[key for key, _, _ in DEFAULT_KEYS]).delete()


class Migration(migrations.Migration):
    dependencies = [("chargers", "0001_initial")]
    operations = [migrations.RunPython(add_defaults, remove_defaults)]
