"""Give the three roles (groups of badges.0003) their dashboard permissions.

- admin: sees everything, sends commands, changes charger configuration keys;
- operator: sees everything and sends commands (reset, remote start/stop, unlock, …), but
  changes no configuration;
- viewer: sees everything, changes nothing.
Re-running it is safe: permissions are only added.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ROLES = {
    "admin": ["view_site", "operate_chargers", "configure_chargers"],
    "operator": ["view_site", "operate_chargers"],
    "viewer": ["view_site"],
}


def grant(apps, schema_editor):
    # Permissions are normally created after all migrations ran: create them now.
    app_config = apps.get_app_config("dashboard")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codes in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        for code in codes:
            group.permissions.add(Permission.objects.get(content_type__app_label="dashboard", codename=code))


class Migration(migrations.Migration):

    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("badges", "0003_permission_groups"),
        ("dashboard", "0001_initial"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
