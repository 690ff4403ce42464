"""The three roles of the badges and sessions admin, as Django groups.

- admin: manages badges and groups (add, change, delete, import), blocks/unblocks, pushes
  local lists, reads sessions and downloads statements;
- operator: may only block and unblock badges (an admin action) besides reading; downloads
  statements;
- viewer: reads (and exports) everything, changes nothing.
Re-running the migration (or editing the groups in the admin) is safe: permissions are added.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW = [
    "badges.view_badge", "badges.view_badgegroup", "badges.view_localliststate",
    "transactions.view_transaction", "transactions.view_metersample",
]
ROLES = {
    "admin": VIEW + [
        "badges.add_badge", "badges.change_badge", "badges.delete_badge", "badges.block_badge",
        "badges.download_statement", "badges.add_badgegroup", "badges.change_badgegroup",
        "badges.delete_badgegroup", "badges.change_localliststate",
    ],
    "operator": VIEW + ["badges.block_badge", "badges.download_statement"],
    "viewer": VIEW,
}


def create_groups(apps, schema_editor):
    # Permissions are normally created after all migrations ran: create them now.
    for label in ("badges", "transactions"):
        app_config = apps.get_app_config(label)
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codes in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        for code in codes:
            app_label, codename = code.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


class Migration(migrations.Migration):

    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("badges", "0002_groups_rights_validity_local_lists"),
        ("transactions", "0002_badge_offline_energy_closed_by"),
    ]

    operations = [
        migrations.RunPython(create_groups, migrations.RunPython.noop),
    ]
