"""The default hosting catalog, in EUR, priced per month in cents."""

from django.db import migrations

PLANS = [
    # id, name, storage_gb, price_per_month
    ("web-starter", "Web Starter", 10, 399),
    ("web-business", "Web Business", 50, 999),
    ("web-pro", "Web Pro", 200, 1999),
]


def install(apps, schema_editor):
    HostingPlan = apps.get_model("hosting", "HostingPlan")
    for plan_id, name, storage_gb, price_per_month in PLANS:
        HostingPlan.objects.update_or_create(
            id=plan_id,
            defaults={
                "name": name,
                "storage_gb": storage_gb,
                "price_per_month": price_per_month,
                "currency": "EUR",
                "is_active": True,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("hosting", "0001_initial")]
    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
