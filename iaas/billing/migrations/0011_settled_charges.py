"""Aggregate settlement (issue 11): one ledger entry settles a wallet's charges of one
context at once, so what a charge is (its amount, its service, its period, its invoice
line, its refund) moves from the ledger entry to a record of its own, SettledCharge.

This step adds the new shape next to the old one: the settled charges' table, invoice
lines per service and month (subject and period), and a refund's link to the settled
charge, nullable until 0012 fills it from the entries; the links to ledger entries
become nullable so that 0013 can drop them (and the way back can refill them).
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

from ._rebuilt import keeping_append_only


class Migration(migrations.Migration):
    dependencies = [("billing", "0010_ledger_chain_trigger")]

    operations = [
        migrations.CreateModel(
            name="SettledCharge",
            fields=[
                (
                    "charge_id",
                    models.UUIDField(
                        editable=False,
                        help_text="The context's charge.",
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("context", models.CharField(max_length=20)),
                ("amount", models.BigIntegerField(help_text="Minor units charged (positive).")),
                ("currency", models.CharField(max_length=3)),
                (
                    "subject_id",
                    models.UUIDField(
                        blank=True, help_text="The server, subscription or volume paid for.", null=True
                    ),
                ),
                ("description", models.CharField(max_length=255)),
                ("period_start", models.DateTimeField(blank=True, null=True)),
                ("period_end", models.DateTimeField(blank=True, null=True)),
                ("transaction_date", models.DateTimeField()),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "invoice_line",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="charges",
                        to="billing.invoiceline",
                    ),
                ),
                (
                    "ledger_entry",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="charges",
                        to="billing.ledgerentry",
                    ),
                ),
                (
                    "wallet",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="settled_charges",
                        to="billing.wallet",
                    ),
                ),
            ],
            options={
                "ordering": ["transaction_date", "charge_id"],
                "indexes": [
                    models.Index(
                        condition=models.Q(("invoice_line__isnull", True)),
                        fields=["wallet", "transaction_date"],
                        name="settled_charge_uninvoiced",
                    )
                ],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("amount__gt", 0)), name="settled_charge_amount_positive"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("currency__regex", "^[A-Z]{3}$")),
                        name="settled_charge_currency_iso4217",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("period_start__isnull", True),
                            ("period_end__isnull", True),
                            ("period_end__gte", models.F("period_start")),
                            _connector="OR",
                        ),
                        name="settled_charge_period_ordered",
                    ),
                ],
            },
        ),
        *keeping_append_only(
            ("billing_invoiceline", "billing_refund"),
            [
                migrations.AddField(
                    model_name="invoiceline",
                    name="subject_id",
                    field=models.UUIDField(
                        blank=True,
                        help_text="The server, subscription or volume its charges paid for.",
                        null=True,
                    ),
                ),
                migrations.AddField(
                    model_name="invoiceline",
                    name="period_start",
                    field=models.DateTimeField(blank=True, null=True),
                ),
                migrations.AddField(
                    model_name="invoiceline",
                    name="period_end",
                    field=models.DateTimeField(blank=True, null=True),
                ),
                migrations.AlterField(
                    model_name="invoiceline",
                    name="amount",
                    field=models.BigIntegerField(
                        help_text="Minor units charged (positive): the sum of its charges."
                    ),
                ),
                migrations.AlterField(
                    model_name="invoiceline",
                    name="ledger_entry",
                    field=models.OneToOneField(
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="invoice_line",
                        to="billing.ledgerentry",
                    ),
                ),
                migrations.AddField(
                    model_name="refund",
                    name="charge",
                    field=models.OneToOneField(
                        null=True,
                        help_text="The charge refunded.",
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="refund",
                        to="billing.settledcharge",
                    ),
                ),
                migrations.AlterField(
                    model_name="refund",
                    name="charge_entry",
                    field=models.OneToOneField(
                        null=True,
                        help_text="The charge refunded.",
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="refund",
                        to="billing.ledgerentry",
                    ),
                ),
            ],
        ),
    ]
