from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="DashboardAccess",
            fields=[("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"))],
            options={
                "managed": False,
                "default_permissions": (),
                "permissions": [
                    ("view_site", "Can see the operator dashboard: site, chargers, sessions, logs, health"),
                    ("operate_chargers", "Can send commands to chargers (reset, remote start/stop, unlock, …)"),
                    ("configure_chargers", "Can change chargers' configuration keys (ChangeConfiguration)"),
                ],
            },
        ),
    ]
