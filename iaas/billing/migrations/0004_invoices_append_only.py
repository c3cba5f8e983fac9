"""Issued invoices are immutable, in the database itself, like the ledger (I6, 0002):
UPDATE and DELETE on invoices and their lines raise. Reuses 0002's iaas_refuse_change().

Per-row triggers, so TRUNCATE (Django's test flush) still works. The counter table
(billing_invoiceseries) is updated on every issue and has no trigger.
"""

from django.db import migrations

from iaas.common.append_only import make_append_only


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_invoices")]
    operations = [make_append_only("billing_invoice", "billing_invoiceline")]
