"""The reservation record (grants, captures, releases) is a log like the ledger: rows
are only ever inserted. Make it append-only in the database too (iaas_refuse_change from
0002), so its rows, and the capture-to-ledger links reconciliation relies on, cannot be
edited after the fact."""

from django.db import migrations

from iaas.common.append_only import make_append_only


class Migration(migrations.Migration):
    dependencies = [("billing", "0006_hold_running_totals")]
    operations = [make_append_only("billing_reservation")]
