"""The operator groups, Support and Finance (iaas/operations/roles.py)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from iaas.operations.roles import FINANCE, SUPPORT, install_operator_groups, viewable_apps


def forwards(apps, schema_editor):
    # Django makes permissions after migrate (post_migrate): on a fresh database they do
    # not exist yet, so make those of the apps the groups need now (idempotent).
    # A selling context added after this migration is not in its state yet: the
    # post_migrate sync (OperationsConfig) gives the groups its permissions.
    labels = {config.label for config in apps.get_app_configs()}
    for label in ("auth", *(label for label in viewable_apps() if label in labels)):
        app_config = apps.get_app_config(label)
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    install_operator_groups(apps)


def backwards(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=[SUPPORT, FINANCE]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("billing", "0002_ledger_append_only"),
        ("cloud", "0002_catalog"),
        ("hosting", "0002_catalog"),
        ("contracts", "0001_initial"),
    ]
    operations = [migrations.RunPython(forwards, backwards)]
