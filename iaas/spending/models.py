"""Abstract tables every selling context has: its allowance per wallet, its charges, its
releases, and for a metered context its usage records and its services' common fields.
Each context subclasses them; the constraints come along."""

from __future__ import annotations

import datetime as dt
import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone


class AbstractAllowance(models.Model):
    """The part of a wallet Billing reserved for this context and the context has not
    spent or released. Carries the wallet's owner and currency, copied from Billing's
    wallet view on creation: every spend checks both."""

    wallet_id = models.UUIDField(primary_key=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    currency = models.CharField(max_length=3)
    amount = models.BigIntegerField(default=0, editable=False)
    # Running totals for I4: granted = amount + charged + released, held by a CHECK.
    granted_total = models.BigIntegerField(default=0, editable=False)
    charged_total = models.BigIntegerField(default=0, editable=False)
    released_total = models.BigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(default=timezone.now, editable=False)
    # Set while the wallet is frozen or closed (operations' wallet status service sets it
    # before Billing freezes the wallet): every spend checks it, the fast path's
    # conditional UPDATE included, so an allowance reserved before the freeze is not
    # spent after it. Releases still go through: money flows back, never out.
    blocked = models.BooleanField(default=False, editable=False)

    class Meta:
        abstract = True
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="%(app_label)s_allowance_not_negative"),
            models.CheckConstraint(
                condition=Q(granted_total__gte=0, charged_total__gte=0, released_total__gte=0),
                name="%(app_label)s_allowance_totals_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(granted_total=F("amount") + F("charged_total") + F("released_total")),
                name="%(app_label)s_allowance_totals_add_up",
            ),
        ]

    def __str__(self) -> str:
        return f"allowance {self.amount} {self.currency} on {self.wallet_id}"


class AbstractCharge(models.Model):
    """Money this context spent out of its allowance: a purchase or a period of use.
    Told to Billing by ChargeRecorded, settled there once."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wallet_id = models.UUIDField(db_index=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    description = models.CharField(max_length=255)
    subject_id = models.UUIDField(db_index=True, help_text="The server or subscription paid for.")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    transaction_date = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    # What Billing refunded of this charge (ChargeRefunded; at most one refund per
    # charge, so the handler sets it, idempotently). Refunded money does not count
    # towards a monthly cap.
    refunded_amount = models.BigIntegerField(default=0, editable=False)
    # The Billing ledger entry that settled this charge (ChargeSettled: one entry settles
    # a wallet's charges of one settlement at once). Null until Billing has booked it.
    ledger_entry_id = models.UUIDField(null=True, blank=True, editable=False)

    class Meta:
        abstract = True
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="%(app_label)s_charge_amount_positive"),
            models.CheckConstraint(
                condition=Q(refunded_amount__gte=0, refunded_amount__lte=F("amount")),
                name="%(app_label)s_charge_refund_within_amount",
            ),
            models.CheckConstraint(
                condition=Q(period_end__gte=F("period_start")),
                name="%(app_label)s_charge_period_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"charge {self.amount} {self.currency}: {self.description}"


class AbstractUsage(models.Model):
    """A metered service's usage in one calendar month (the project's time zone), updated
    in place by the metering runs: no row per service-hour. ``amount`` is what the hours
    cost under the monthly cap, spent out of the allowance as they accrue; a settlement
    run closes what accrued since the last close into one immutable charge (the span
    ``[closed_until, accrued_until)``). I11: ``amount = min(cap + refunded, list_amount)``,
    and the service's ``paid_until`` is the ``accrued_until`` of its latest month."""

    id = models.BigAutoField(primary_key=True)
    service_id = models.UUIDField(help_text="The metered service (a server, a volume).")
    month = models.DateField(help_text="The first day of the calendar month.")
    wallet_id = models.UUIDField()
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    currency = models.CharField(max_length=3)
    hours = models.IntegerField(default=0, help_text="Hours accrued (a started hour is a whole hour).")
    # What the hours would cost without the cap (each hour at the price it was accrued at)
    # and the cap that applies: amount = min(cap + refunded, list_amount).
    list_amount = models.BigIntegerField(default=0)
    # The list amount exactly, in 1/LIST_DIVISOR minor units, for prices that are not
    # whole minor units per hour (a volume's GB-hour): each step adds its exact price
    # here, and list_amount is this rounded once, half up (equal for a divisor of 1).
    list_exact = models.BigIntegerField(default=0, db_default=0)
    cap = models.BigIntegerField(default=0)
    amount = models.BigIntegerField(default=0, help_text="Minor units spent for the month so far.")
    # Refunds of this month's charges: refunded money does not count towards the cap.
    refunded = models.BigIntegerField(default=0)
    accrued_until = models.DateTimeField(help_text="The end of the last hour accrued.")
    # What settlement runs have closed into charges: amount and hours up to closed_until.
    closed_amount = models.BigIntegerField(default=0)
    closed_hours = models.IntegerField(default=0)
    closed_until = models.DateTimeField(help_text="Where the span not yet closed into a charge starts.")
    # When a settlement run should close what accrued (the cadence, the month's end, the
    # service's end); null when nothing is open.
    close_due_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True
        ordering = ["-month", "service_id"]
        constraints = [
            models.UniqueConstraint(fields=["service_id", "month"], name="%(app_label)s_usage_one_per_month"),
            models.CheckConstraint(
                condition=Q(hours__gte=F("closed_hours"), closed_hours__gte=0),
                name="%(app_label)s_usage_hours_cover_closed",
            ),
            models.CheckConstraint(
                condition=Q(amount__gte=F("closed_amount"), closed_amount__gte=0),
                name="%(app_label)s_usage_amount_covers_closed",
            ),
            models.CheckConstraint(
                condition=Q(refunded__gte=0, refunded__lte=F("closed_amount")),
                name="%(app_label)s_usage_refunded_within_closed",
            ),
            models.CheckConstraint(
                condition=Q(amount__lte=F("list_amount"), cap__gte=0),
                name="%(app_label)s_usage_amount_within_list",
            ),
            models.CheckConstraint(
                condition=Q(accrued_until__gte=F("closed_until")),
                name="%(app_label)s_usage_closed_before_accrued",
            ),
        ]
        indexes = [
            # Reconciliation sums what accrued and is not closed, per wallet.
            models.Index(fields=["wallet_id"], name="%(app_label)s_usage_wallet"),
            # Settlement walks the records due for closing in wallet order (a keyset).
            models.Index(
                fields=["wallet_id", "id"],
                condition=Q(close_due_at__isnull=False),
                name="%(app_label)s_usage_open",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"usage of {self.service_id} in {self.month:%Y-%m}: {self.hours} h, {self.amount} {self.currency}"
        )

    # What list_exact counts in: a context whose hourly prices are fractions of a minor
    # unit sets it (storage: a GB-month is priced over 730 hours); 1 is whole minor units.
    # That list_amount is list_exact rounded once is I11's, checked by reconcile: not a
    # CHECK, which PostgreSQL would hold the upsert's proposed row (a step's difference,
    # not a total) to before ON CONFLICT adds it up.
    LIST_DIVISOR = 1

    @property
    def open_amount(self) -> int:
        """Spent and not yet closed into a charge (what Billing has not seen)."""
        return self.amount - self.closed_amount


class AbstractRelease(models.Model):
    """Allowance this context gave back. Told to Billing by AllowanceReleased."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wallet_id = models.UUIDField(db_index=True)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="%(app_label)s_release_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"release {self.amount} {self.currency} ({self.reason})"


class SuspensionCause(models.TextChoices):
    """Why a sold service (a server, a subscription) is not running. Several can hold at
    once; the service runs again only when none holds (ARCHITECTURE.md, a service's life).

    - ``unpaid``: the wallet could not pay. Set and lifted by the batch runs, or lifted by
      an operator's resume; either way what the service owes is charged. The only cause
      that starts the termination clock (the grace period).
    - ``wallet_blocked``: the wallet is frozen or closed. No clock; lifted when a retried
      charge succeeds.
    - ``operator``: set and lifted only by an operator (a legal hold, abuse, the customer's
      own request), with a reason. No clock: nothing terminates the service while it holds.
      A refusal no change to the wallet can cure (a currency mismatch) is recorded as this
      cause, with the error as its reason, for a person to resolve.
    """

    UNPAID = "unpaid", "Unpaid"
    WALLET_BLOCKED = "wallet_blocked", "Wallet frozen or closed"
    OPERATOR = "operator", "Operator"


class AbstractSuspendable(models.Model):
    """The suspension causes of a sold service, one column each (portable: the embedded
    SQLite default has no arrays), with the instant each began. A subclass has a
    ``status`` field with ``active`` and ``suspended`` values; its CHECKs keep the status
    and the causes in step (``suspended`` exactly when a cause holds, unless ended)."""

    unpaid_since = models.DateTimeField(null=True, blank=True, editable=False)
    wallet_blocked_since = models.DateTimeField(null=True, blank=True, editable=False)
    operator_hold_since = models.DateTimeField(null=True, blank=True, editable=False)
    operator_reason = models.CharField(max_length=255, blank=True, default="", editable=False)
    # When its owner was warned that it will be ended for non-payment (ServiceEndsSoon,
    # iaas.spending.ending): once per suspension. Cleared whenever its causes change (a
    # resumption lifts them all), so a later suspension, or a clock that starts again
    # after a blocked wallet or an operator's hold, warns again.
    end_warned_at = models.DateTimeField(null=True, blank=True, editable=False)

    CAUSE_FIELDS = {
        SuspensionCause.UNPAID: "unpaid_since",
        SuspensionCause.WALLET_BLOCKED: "wallet_blocked_since",
        SuspensionCause.OPERATOR: "operator_hold_since",
    }

    class Meta:
        abstract = True

    @classmethod
    def causes_constraints(cls, prefix: str) -> list[models.BaseConstraint]:
        no_cause = Q(unpaid_since=None, wallet_blocked_since=None, operator_hold_since=None)
        return [
            models.CheckConstraint(
                condition=~Q(status="active") | no_cause, name=f"{prefix}_active_has_no_suspension_cause"
            ),
            models.CheckConstraint(
                condition=~Q(status="suspended") | ~no_cause, name=f"{prefix}_suspended_has_a_cause"
            ),
            models.CheckConstraint(
                condition=Q(operator_hold_since=None) | ~Q(operator_reason=""),
                name=f"{prefix}_operator_hold_has_a_reason",
            ),
            models.CheckConstraint(
                condition=~Q(status="active") | Q(end_warned_at=None),
                name=f"{prefix}_active_not_warned_of_end",
            ),
        ]

    @property
    def suspension_causes(self) -> list[str]:
        """The causes that hold, in a fixed order (unpaid, wallet_blocked, operator)."""
        return [str(cause) for cause, name in self.CAUSE_FIELDS.items() if getattr(self, name) is not None]

    def has_cause(self, cause: str) -> bool:
        return getattr(self, self.CAUSE_FIELDS[SuspensionCause(cause)]) is not None

    def add_cause(self, cause: str, *, at: dt.datetime, reason: str = "") -> bool:
        """Record ``cause`` (keeping the instant it first began). Returns whether it is new."""
        name = self.CAUSE_FIELDS[SuspensionCause(cause)]
        if cause == SuspensionCause.OPERATOR:
            self.operator_reason = reason[:255]
        if getattr(self, name) is not None:
            return False
        setattr(self, name, at)
        self.end_warned_at = None
        return True

    def lift_cause(self, cause: str) -> bool:
        """Clear ``cause``. Returns whether it held."""
        name = self.CAUSE_FIELDS[SuspensionCause(cause)]
        if getattr(self, name) is None:
            return False
        setattr(self, name, None)
        if cause == SuspensionCause.OPERATOR:
            self.operator_reason = ""
        self.end_warned_at = None
        return True

    def unpaid_alone_since(self) -> dt.datetime | None:
        """When ``unpaid`` is the only cause, since when it holds: the termination clock
        runs only then (wallet_blocked and operator stop it)."""
        if self.wallet_blocked_since is None and self.operator_hold_since is None:
            return self.unpaid_since
        return None

    # What a change of causes saves (the warning about the end goes with them).
    CAUSE_UPDATE_FIELDS = [
        "unpaid_since",
        "wallet_blocked_since",
        "operator_hold_since",
        "operator_reason",
        "end_warned_at",
    ]


class AbstractMeteredService(AbstractSuspendable):
    """A service metered by the hour (a server, a volume): paid up to ``paid_until``, its
    hours accrued into its usage records by the metering run, suspended, resumed and
    ended by the kit's metered-service life (iaas.spending.metered). A subclass adds its
    ``plan`` (a foreign key to its catalog), its ``status`` field with the values
    ``active``, ``suspended`` and its ended value (ENDED_STATUS), and the field that
    records the end (ENDED_AT)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="%(class)ss")
    wallet_id = models.UUIDField(db_index=True)
    name = models.CharField(max_length=63)
    created_at = models.DateTimeField(default=timezone.now)
    paid_until = models.DateTimeField()
    # When the service stopped running (the first cause); the causes are in
    # AbstractSuspendable's columns.
    suspended_at = models.DateTimeField(null=True, blank=True)

    ENDED_STATUS = "terminated"
    ENDED_AT = "terminated_at"

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.name

    @property
    def ended_at(self) -> dt.datetime | None:
        return getattr(self, self.ENDED_AT)

    @staticmethod
    def metering_indexes(prefix: str, *, ended_status: str) -> list[models.Index]:
        """The indexes the metering run walks (for a concrete model's Meta)."""
        return [
            models.Index(fields=["status", "paid_until"], name=f"{prefix}_status_paid_until"),
            # Metering walks a partition of wallets with a keyset on (wallet, service).
            models.Index(
                fields=["wallet_id", "id"], condition=~Q(status=ended_status), name=f"{prefix}_wallet_keyset"
            ),
        ]
