"""The default server catalog, in EUR. Hourly prices in cents per started hour, each
capped per calendar month (the Hetzner model)."""

from django.db import migrations

PLANS = [
    # id, name, vcpus, memory_mb, disk_gb, price_per_hour, monthly_cap
    ("s-1vcpu-1gb", "Basic 1 vCPU / 1 GB", 1, 1024, 25, 1, 500),
    ("s-1vcpu-2gb", "Basic 1 vCPU / 2 GB", 1, 2048, 50, 2, 1000),
    ("s-2vcpu-4gb", "Standard 2 vCPU / 4 GB", 2, 4096, 80, 4, 2000),
    ("s-4vcpu-8gb", "Standard 4 vCPU / 8 GB", 4, 8192, 160, 8, 4000),
    ("s-8vcpu-16gb", "Performance 8 vCPU / 16 GB", 8, 16384, 320, 16, 8000),
    ("c-16vcpu-32gb", "CPU-optimised 16 vCPU / 32 GB", 16, 32768, 400, 40, 20000),
]


def install(apps, schema_editor):
    ServerPlan = apps.get_model("cloud", "ServerPlan")
    for plan_id, name, vcpus, memory_mb, disk_gb, price_per_hour, monthly_cap in PLANS:
        ServerPlan.objects.update_or_create(
            id=plan_id,
            defaults={
                "name": name,
                "vcpus": vcpus,
                "memory_mb": memory_mb,
                "disk_gb": disk_gb,
                "price_per_hour": price_per_hour,
                "monthly_cap": monthly_cap,
                "currency": "EUR",
                "is_active": True,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("cloud", "0001_initial")]
    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
