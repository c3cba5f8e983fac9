"""The oldest delivered rows found from an index, for purge_outbox. A plain CREATE
INDEX, like 0002: it holds writes to the outbox while it builds, so on a large outbox
run this migration in a quiet moment."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("contracts", "0003_stable_handler_names"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="outboxmessage",
            index=models.Index(
                condition=models.Q(("status", "done")), fields=["delivered_at", "id"], name="outbox_delivered"
            ),
        ),
    ]
