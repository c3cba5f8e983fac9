"""Usage records keep their list amount exactly (iaas.spending.models.AbstractUsage.list_exact)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def exact_is_list(apps, schema_editor):
    """Servers are priced in whole minor units per hour: the exact list is the list."""
    apps.get_model("cloud", "Usage").objects.update(list_exact=models.F("list_amount"))


class Migration(migrations.Migration):
    dependencies = [
        ("cloud", "0007_usage_from_charges"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="usage",
            name="list_exact",
            field=models.BigIntegerField(db_default=0, default=0),
        ),
        migrations.RunPython(exact_is_list, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="server",
            name="owner",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="%(class)ss",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]
