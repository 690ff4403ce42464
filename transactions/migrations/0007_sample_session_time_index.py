"""Meter samples: the session's index becomes (session, timestamp).

The control loop reads the last minute of each running session's currents every tick; with an
index on the session alone, SQLite walked each session's whole history for it. The pair serves
every lookup by session too, so the session-only index is dropped (one index to update per sample,
as before).

Done in the database by hand rather than by altering the field: on SQLite, Django alters a
foreign key by copying the whole table, which on a site's sample history takes minutes.
"""

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

SESSION_ONLY_INDEX = "transactions_metersample_transaction_id_19a2003a"  # Django's name for the FK's index


def drop_session_only_index(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Drop the index on the session column alone, whatever the database named it."""
    table = apps.get_model("transactions", "MeterSample")._meta.db_table
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    for name, info in constraints.items():
        if info["index"] and info["columns"] == ["transaction_id"] and not (info["unique"] or info["primary_key"]):
            schema_editor.execute(f"DROP INDEX {schema_editor.quote_name(name)}")


def restore_session_only_index(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    table = apps.get_model("transactions", "MeterSample")._meta.db_table
    quote = schema_editor.quote_name
    schema_editor.execute(f"CREATE INDEX {quote(SESSION_ONLY_INDEX)} ON {quote(table)} ({quote('transaction_id')})")


class Migration(migrations.Migration):

    dependencies = [
        ('chargers', '0008_log_charge_point_id_unindexed'),
        ('transactions', '0006_meter_sample_charger_index'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='metersample',
            index=models.Index(fields=['transaction', 'timestamp'], name='transaction_transac_be3cde_idx'),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='metersample',
                    name='transaction',
                    field=models.ForeignKey(
                        blank=True, db_index=False,
                        help_text='The session the value belongs to, when the charger named one.', null=True,
                        on_delete=models.deletion.CASCADE, related_name='meter_samples',
                        to='transactions.transaction', verbose_name='session'),
                ),
            ],
            database_operations=[
                migrations.RunPython(drop_session_only_index, restore_session_only_index),
            ],
        ),
    ]
