"""The default volume catalog, in EUR: prices in cents per GB and month, accrued hourly
(a GB-hour is a 730th), sizes in GB."""

from django.db import migrations

PLANS = [
    # id, name, price_per_gb_month, min_size_gb, max_size_gb
    ("hdd", "Standard HDD", 4, 10, 16000),
    ("ssd", "SSD", 10, 10, 16000),
    ("nvme", "NVMe, high IOPS", 20, 10, 16000),
]


def install(apps, schema_editor):
    VolumePlan = apps.get_model("storage", "VolumePlan")
    for plan_id, name, price, min_size, max_size in PLANS:
        VolumePlan.objects.update_or_create(
            id=plan_id,
            defaults={
                "name": name,
                "price_per_gb_month": price,
                "min_size_gb": min_size,
                "max_size_gb": max_size,
                "currency": "EUR",
                "is_active": True,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("storage", "0001_initial")]
    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
