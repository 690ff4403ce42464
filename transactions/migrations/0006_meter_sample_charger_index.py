"""Drop MeterSample's index on charger alone: (charger, connector, timestamp) serves every lookup
by charger. A plain DROP INDEX: Django's own AlterField would rebuild the whole table on SQLite
(a copy of every sample) and leaves the index in place on PostgreSQL."""

import django.db.models.deletion
from django.db import migrations, models

INDEX = "transactions_metersample_charger_id_644d263c"


class Migration(migrations.Migration):

    dependencies = [
        ("chargers", "0006_field_labels"),
        ("transactions", "0005_meter_sample_minute"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    sql=f'DROP INDEX IF EXISTS "{INDEX}"',
                    reverse_sql=f'CREATE INDEX "{INDEX}" ON "transactions_metersample" ("charger_id")',
                ),
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="metersample",
                    name="charger",
                    field=models.ForeignKey(
                        db_index=False, help_text="The charger that reported the value.",
                        on_delete=django.db.models.deletion.CASCADE, related_name="meter_samples",
                        to="chargers.charger",
                    ),
                ),
            ],
        ),
    ]
