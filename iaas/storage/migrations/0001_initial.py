"""Storage's tables (iaas.storage.models), and the database backstop that refuses two
charges of one volume overlapping in time (PostgreSQL; iaas.spending.schema)."""

import uuid

import django.db.models.deletion
import django.db.models.expressions
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

from iaas.spending.schema import no_overlapping_charges


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Release",
            fields=[
                (
                    "id",
                    models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False),
                ),
                ("wallet_id", models.UUIDField(db_index=True)),
                ("amount", models.BigIntegerField()),
                ("currency", models.CharField(max_length=3)),
                ("reason", models.CharField(max_length=100)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "verbose_name": "storage release",
                "ordering": ["-created_at"],
                "abstract": False,
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("amount__gt", 0)), name="storage_release_amount_positive"
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="VolumePlan",
            fields=[
                ("id", models.SlugField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=100)),
                (
                    "price_per_gb_month",
                    models.BigIntegerField(
                        help_text="Minor units per GB and month: accrued hourly (a GB-hour is a 730th), rounded once per month; a volume's month costs at most a full month at its size. A new price applies from the next hour accrued."
                    ),
                ),
                ("min_size_gb", models.PositiveIntegerField()),
                ("max_size_gb", models.PositiveIntegerField()),
                ("currency", models.CharField(default="EUR", max_length=3)),
                ("is_active", models.BooleanField(default=True, help_text="Offered for new volumes.")),
            ],
            options={
                "ordering": ["price_per_gb_month", "id"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("price_per_gb_month__gt", 0)), name="volume_plan_price_positive"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("max_size_gb__gte", models.F("min_size_gb")), ("min_size_gb__gt", 0)
                        ),
                        name="volume_plan_sizes_ordered",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="Allowance",
            fields=[
                ("wallet_id", models.UUIDField(primary_key=True, serialize=False)),
                ("currency", models.CharField(max_length=3)),
                ("amount", models.BigIntegerField(default=0, editable=False)),
                ("granted_total", models.BigIntegerField(default=0, editable=False)),
                ("charged_total", models.BigIntegerField(default=0, editable=False)),
                ("released_total", models.BigIntegerField(default=0, editable=False)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ("last_used_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ("blocked", models.BooleanField(default=False, editable=False)),
                (
                    "owner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name": "storage allowance",
                "abstract": False,
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("amount__gte", 0)), name="storage_allowance_not_negative"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("charged_total__gte", 0), ("granted_total__gte", 0), ("released_total__gte", 0)
                        ),
                        name="storage_allowance_totals_not_negative",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            (
                                "granted_total",
                                django.db.models.expressions.CombinedExpression(
                                    django.db.models.expressions.CombinedExpression(
                                        models.F("amount"), "+", models.F("charged_total")
                                    ),
                                    "+",
                                    models.F("released_total"),
                                ),
                            )
                        ),
                        name="storage_allowance_totals_add_up",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="Charge",
            fields=[
                (
                    "id",
                    models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False),
                ),
                ("wallet_id", models.UUIDField(db_index=True)),
                ("amount", models.BigIntegerField()),
                ("currency", models.CharField(max_length=3)),
                ("description", models.CharField(max_length=255)),
                (
                    "subject_id",
                    models.UUIDField(db_index=True, help_text="The server or subscription paid for."),
                ),
                ("period_start", models.DateTimeField()),
                ("period_end", models.DateTimeField()),
                ("transaction_date", models.DateTimeField()),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("refunded_amount", models.BigIntegerField(default=0, editable=False)),
                ("ledger_entry_id", models.UUIDField(blank=True, editable=False, null=True)),
                (
                    "owner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name": "storage charge",
                "ordering": ["-created_at"],
                "abstract": False,
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("amount__gt", 0)), name="storage_charge_amount_positive"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("refunded_amount__gte", 0), ("refunded_amount__lte", models.F("amount"))
                        ),
                        name="storage_charge_refund_within_amount",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("period_end__gte", models.F("period_start"))),
                        name="storage_charge_period_ordered",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="Usage",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("service_id", models.UUIDField(help_text="The metered service (a server, a volume).")),
                ("month", models.DateField(help_text="The first day of the calendar month.")),
                ("wallet_id", models.UUIDField()),
                ("currency", models.CharField(max_length=3)),
                (
                    "hours",
                    models.IntegerField(
                        default=0, help_text="Hours accrued (a started hour is a whole hour)."
                    ),
                ),
                ("list_amount", models.BigIntegerField(default=0)),
                ("list_exact", models.BigIntegerField(db_default=0, default=0)),
                ("cap", models.BigIntegerField(default=0)),
                (
                    "amount",
                    models.BigIntegerField(default=0, help_text="Minor units spent for the month so far."),
                ),
                ("refunded", models.BigIntegerField(default=0)),
                ("accrued_until", models.DateTimeField(help_text="The end of the last hour accrued.")),
                ("closed_amount", models.BigIntegerField(default=0)),
                ("closed_hours", models.IntegerField(default=0)),
                (
                    "closed_until",
                    models.DateTimeField(help_text="Where the span not yet closed into a charge starts."),
                ),
                ("close_due_at", models.DateTimeField(blank=True, null=True)),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "owner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name": "volume usage",
                "verbose_name_plural": "volume usage",
                "ordering": ["-month", "service_id"],
                "abstract": False,
                "indexes": [
                    models.Index(fields=["wallet_id"], name="storage_usage_wallet"),
                    models.Index(
                        condition=models.Q(("close_due_at__isnull", False)),
                        fields=["wallet_id", "id"],
                        name="storage_usage_open",
                    ),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("service_id", "month"), name="storage_usage_one_per_month"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("closed_hours__gte", 0), ("hours__gte", models.F("closed_hours"))
                        ),
                        name="storage_usage_hours_cover_closed",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("amount__gte", models.F("closed_amount")), ("closed_amount__gte", 0)
                        ),
                        name="storage_usage_amount_covers_closed",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("refunded__gte", 0), ("refunded__lte", models.F("closed_amount"))
                        ),
                        name="storage_usage_refunded_within_closed",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("amount__lte", models.F("list_amount")), ("cap__gte", 0)),
                        name="storage_usage_amount_within_list",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("accrued_until__gte", models.F("closed_until"))),
                        name="storage_usage_closed_before_accrued",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="Volume",
            fields=[
                ("unpaid_since", models.DateTimeField(blank=True, editable=False, null=True)),
                ("wallet_blocked_since", models.DateTimeField(blank=True, editable=False, null=True)),
                ("operator_hold_since", models.DateTimeField(blank=True, editable=False, null=True)),
                ("operator_reason", models.CharField(blank=True, default="", editable=False, max_length=255)),
                (
                    "id",
                    models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False),
                ),
                ("wallet_id", models.UUIDField(db_index=True)),
                ("name", models.CharField(max_length=63)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("paid_until", models.DateTimeField()),
                ("suspended_at", models.DateTimeField(blank=True, null=True)),
                (
                    "size_gb",
                    models.PositiveIntegerField(
                        verbose_name="size (GB)",
                        help_text="Grows only; the bigger size accrues from the resize on.",
                    ),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[("active", "Active"), ("suspended", "Suspended"), ("deleted", "Deleted")],
                        default="active",
                        max_length=12,
                    ),
                ),
                ("deleted_at", models.DateTimeField(blank=True, null=True)),
                (
                    "owner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="%(class)ss",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "plan",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="volumes",
                        to="storage.volumeplan",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "id"],
                "indexes": [
                    models.Index(fields=["status", "paid_until"], name="volume_status_paid_until"),
                    models.Index(
                        condition=models.Q(("status", "deleted"), _negated=True),
                        fields=["wallet_id", "id"],
                        name="volume_wallet_keyset",
                    ),
                ],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("status", "active"), _negated=True),
                            models.Q(
                                ("operator_hold_since", None),
                                ("unpaid_since", None),
                                ("wallet_blocked_since", None),
                            ),
                            _connector="OR",
                        ),
                        name="volume_active_has_no_suspension_cause",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("status", "suspended"), _negated=True),
                            models.Q(
                                ("operator_hold_since", None),
                                ("unpaid_since", None),
                                ("wallet_blocked_since", None),
                                _negated=True,
                            ),
                            _connector="OR",
                        ),
                        name="volume_suspended_has_a_cause",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("operator_hold_since", None),
                            models.Q(("operator_reason", ""), _negated=True),
                            _connector="OR",
                        ),
                        name="volume_operator_hold_has_a_reason",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("size_gb__gt", 0)), name="volume_size_positive"
                    ),
                ],
            },
        ),
        no_overlapping_charges("storage"),
    ]
