"""Aggregate settlement, the last step of the shape change: invoice lines and refunds
no longer point at ledger entries (an entry may settle many charges), only settled
charges do; a refund's charge is required."""

import django.db.models.deletion
from django.db import migrations, models

from ._rebuilt import keeping_append_only


class Migration(migrations.Migration):
    dependencies = [("billing", "0012_settled_charges_data")]

    operations = keeping_append_only(
        ("billing_invoiceline", "billing_refund"),
        [
            migrations.RemoveField(model_name="invoiceline", name="ledger_entry"),
            migrations.RemoveField(model_name="refund", name="charge_entry"),
            migrations.AlterField(
                model_name="refund",
                name="charge",
                field=models.OneToOneField(
                    help_text="The charge refunded.",
                    on_delete=django.db.models.deletion.PROTECT,
                    related_name="refund",
                    to="billing.settledcharge",
                ),
            ),
        ],
    )
