"""Outbox rows name their subscription by a stable name (``bus.subscribe(..., name=)``)
instead of the handler function's import path. Undelivered rows (pending, and failed
ones an operator may put back in line) are renamed, so they stay deliverable; the
delivered history keeps the names it was delivered under (rewriting it would touch
every row of a large table for nothing).

A later rename of a subscription follows this model: a data migration that maps the
old name to the new one on the undelivered rows."""

from django.db import migrations

# The import paths the bus used to store, and the names the contexts now subscribe with.
RENAMED = {
    "iaas.billing.handlers.settle_charge": "billing.settle_charge",
    "iaas.billing.handlers.apply_release": "billing.apply_release",
    "iaas.cloud.handlers.release_on_request": "cloud.release_on_request",
    "iaas.hosting.handlers.release_on_request": "hosting.release_on_request",
}


def _rename(apps, mapping: dict[str, str]) -> None:
    OutboxMessage = apps.get_model("contracts", "OutboxMessage")
    undelivered = OutboxMessage.objects.exclude(status="done")
    for old, new in mapping.items():
        undelivered.filter(handler=old).update(handler=new)


def rename_undelivered(apps, schema_editor) -> None:
    _rename(apps, RENAMED)


def restore_undelivered(apps, schema_editor) -> None:
    _rename(apps, {new: old for old, new in RENAMED.items()})


class Migration(migrations.Migration):
    dependencies = [("contracts", "0002_outbox_undelivered_index")]
    operations = [migrations.RunPython(rename_undelivered, restore_undelivered)]
