"""Refunds are a log like the ledger: rows are only ever inserted (iaas_refuse_change
from 0002 on PostgreSQL, RAISE triggers on SQLite)."""

from django.db import migrations

from iaas.common.append_only import make_append_only


class Migration(migrations.Migration):
    dependencies = [("billing", "0008_refunds")]
    operations = [make_append_only("billing_refund")]
