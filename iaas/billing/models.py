"""Billing's tables. The invariants the database can hold are constraints here, so no
bug in Python can overspend (I2, I3's parts, I5, I6 with the trigger in migrations)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from iaas.contracts.types import format_minor_units


class Wallet(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        FROZEN = "frozen", "Frozen"
        CLOSED = "closed", "Closed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="wallets")
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    balance = models.BigIntegerField(default=0, editable=False)
    reserved = models.BigIntegerField(default=0, editable=False)
    # The last ledger sequence number handed out, under this row's lock (I9).
    ledger_sequence = models.BigIntegerField(default=0, editable=False)
    # The owner's low-balance alert (PATCH /api/v1/wallets/{id}/), minor units; None: off.
    # No "notified" flag goes with it: the writer that makes available drop compares it
    # with available before and after, under this row's lock (``low_balance_crossed``).
    low_balance_threshold = models.BigIntegerField(
        null=True,
        blank=True,
        editable=False,
        help_text="LowBalanceReached is published when the available balance drops below it.",
    )
    # What a payment reversal (a card refund, a dispute) could not take because the money
    # was spent or held (ARCHITECTURE.md, "Money coming in"): the balance never goes
    # below zero (I2); later top-ups pay this first.
    debt = models.BigIntegerField(default=0, db_default=0, editable=False)
    # The wallet's auto top-up threshold while one is set up (AutoTopUp), copied here under
    # this row's lock so the reserve paths see it in the row they already lock and return:
    # a spend that takes the available balance below it asks for an auto top-up.
    auto_top_up_below = models.BigIntegerField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "currency"], name="wallet_one_per_owner_currency"),
            models.CheckConstraint(condition=Q(balance__gte=0), name="wallet_balance_not_negative"),
            models.CheckConstraint(condition=Q(reserved__gte=0), name="wallet_reserved_not_negative"),
            models.CheckConstraint(
                condition=Q(reserved__lte=F("balance")), name="wallet_reserved_within_balance"
            ),
            models.CheckConstraint(
                condition=Q(currency__regex=r"^[A-Z]{3}$"), name="wallet_currency_iso4217"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["active", "frozen", "closed"]), name="wallet_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(low_balance_threshold__isnull=True) | Q(low_balance_threshold__gte=0),
                name="wallet_low_balance_threshold_not_negative",
            ),
            models.CheckConstraint(condition=Q(debt__gte=0), name="wallet_debt_not_negative"),
            models.CheckConstraint(
                condition=Q(auto_top_up_below__isnull=True) | Q(auto_top_up_below__gt=0),
                name="wallet_auto_top_up_below_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.currency} wallet {self.id}"

    @property
    def available(self) -> int:
        return self.balance - self.reserved

    def low_balance_crossed(self, *, available_before: int) -> bool:
        """Whether the available balance just went from at or above the low-balance
        threshold (``available_before``) to below it (now): the moment to tell the owner,
        once. Asked by the writer that made it drop, under the wallet's lock, so before
        and now are exact; a rise back to the threshold needs no bookkeeping to arm the
        next crossing."""
        threshold = self.low_balance_threshold
        return threshold is not None and available_before >= threshold > self.available

    def auto_top_up_crossed(self, *, available_before: int) -> bool:
        """Whether the write that took the available balance from ``available_before`` to
        what it is now took it below the auto top-up threshold: the moment to ask for one
        (once per crossing; the runner retries on its own)."""
        threshold = self.auto_top_up_below
        return threshold is not None and available_before >= threshold > self.available

    def money(self, amount: int) -> str:
        return format_minor_units(amount, self.currency)


class LedgerEntry(models.Model):
    """One line of a wallet's book. Append-only (I6): a database trigger refuses UPDATE
    and DELETE; a mistake is corrected by a new entry."""

    class Kind(models.TextChoices):
        TOP_UP = "top_up", "Top-up"
        CHARGE = "charge", "Charge"
        REFUND = "refund", "Refund"
        ADJUSTMENT = "adjustment", "Adjustment"
        # Money the payment provider took back (a card refund, a dispute), or a top-up's
        # part that paid the debt such a reversal left.
        REVERSAL = "reversal", "Reversal"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="ledger_entries")
    sequence = models.BigIntegerField()
    kind = models.CharField(max_length=12, choices=Kind.choices)
    amount = models.BigIntegerField(help_text="Signed minor units: credits positive, debits negative.")
    balance_after = models.BigIntegerField()
    # When the business event happened (the purchase, the metered hour) ...
    transaction_date = models.DateTimeField()
    # ... and when Billing booked it.
    posted_at = models.DateTimeField(default=timezone.now)
    description = models.CharField(max_length=255)
    # What this entry books, unique per wallet: "charges:<first charge id>" (a settlement
    # of one context's charges; "charge:<id>" before settlement was aggregate),
    # "top-up:<id>", "refund:<charge id>", ...
    reference = models.CharField(max_length=120)
    context = models.CharField(max_length=20, blank=True, help_text="The selling context of a charge.")
    # For a charge entry, its first charge (its charges are SettledCharge rows).
    source_id = models.UUIDField(null=True, blank=True, help_text="The charge, top-up or refund booked.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The operator who made an adjustment.",
    )

    class Meta:
        verbose_name_plural = "ledger entries"
        ordering = ["wallet", "-sequence"]
        constraints = [
            # On PostgreSQL its index also covers (amount, balance_after, kind), added by
            # migration 0005 (SQLite has no covering indexes): reconciliation reads each
            # wallet's chain (I1, I9) in sequence order from the index alone.
            models.UniqueConstraint(fields=["wallet", "sequence"], name="ledger_sequence_unique"),
            models.UniqueConstraint(fields=["wallet", "reference"], name="ledger_reference_unique"),
            models.CheckConstraint(condition=~Q(amount=0), name="ledger_amount_not_zero"),
            models.CheckConstraint(
                condition=Q(balance_after__gte=0), name="ledger_balance_after_not_negative"
            ),
            models.CheckConstraint(condition=Q(sequence__gte=1), name="ledger_sequence_positive"),
            models.CheckConstraint(
                condition=(
                    Q(kind="top_up", amount__gt=0)
                    | Q(kind="refund", amount__gt=0)
                    | Q(kind="charge", amount__lt=0)
                    | Q(kind="adjustment")
                    | Q(kind="reversal", amount__lt=0)
                ),
                name="ledger_amount_sign_matches_kind",
            ),
        ]
        indexes = [models.Index(fields=["kind", "transaction_date"], name="ledger_kind_date")]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.kind} {self.amount}"


class Hold(models.Model):
    """What Billing has reserved for one selling context out of one wallet and not yet
    seen settled or released. ``wallet.reserved`` is the sum of its holds (I3)."""

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="holds")
    context = models.CharField(max_length=20)
    amount = models.BigIntegerField(default=0)
    # Running totals of the hold's reservation record, moved with ``amount`` in the same
    # statement: granted = amount + captured + released, held by a CHECK. Billing's side
    # of I4 is read from them; reconcile --deep re-derives them from the record (I3).
    granted_total = models.BigIntegerField(default=0)
    captured_total = models.BigIntegerField(default=0)
    released_total = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["wallet", "context"], name="hold_one_per_wallet_context"),
            models.CheckConstraint(condition=Q(amount__gte=0), name="hold_not_negative"),
            models.CheckConstraint(
                condition=Q(granted_total__gte=0, captured_total__gte=0, released_total__gte=0),
                name="hold_totals_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(granted_total=F("amount") + F("captured_total") + F("released_total")),
                name="hold_totals_add_up",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.context} hold on {self.wallet_id}"


class Reservation(models.Model):
    """The append-only record of every change to a hold: a grant, a capture (charges
    settled), a release. Captures and releases are keyed by a business id under a unique
    constraint, applied at most once (I5): a release by the release's id, a capture by
    the first charge of the ledger entry it captures for (one capture per entry; each
    charge is the first of at most one entry, SettledCharge's key sees to that)."""

    class Kind(models.TextChoices):
        GRANT = "grant", "Granted"
        CAPTURE = "capture", "Captured (charge settled)"
        RELEASE = "release", "Released"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="reservations")
    context = models.CharField(max_length=20)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    amount = models.BigIntegerField()
    source_id = models.UUIDField(null=True, blank=True, help_text="The charge or release applied.")
    ledger_entry = models.OneToOneField(
        LedgerEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="capture"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="reservation_amount_positive"),
            models.UniqueConstraint(
                fields=["kind", "source_id"],
                condition=Q(source_id__isnull=False),
                name="reservation_applied_once",
            ),
            models.CheckConstraint(
                condition=Q(kind="grant", source_id__isnull=True)
                | ~Q(kind="grant") & Q(source_id__isnull=False),
                name="reservation_source_matches_kind",
            ),
        ]
        indexes = [models.Index(fields=["wallet", "context"], name="reservation_wallet_context")]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} for {self.context}"


class PaymentCustomer(models.Model):
    """The customer's record at a card provider (Stripe's ``cus_...``), made on first
    need: saved payment methods hang on it."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    provider = models.CharField(max_length=50)
    provider_customer_id = models.CharField(max_length=120)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "provider"], name="payment_customer_one_per_provider"),
            models.UniqueConstraint(
                fields=["provider", "provider_customer_id"], name="payment_customer_reference_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} customer {self.provider_customer_id}"


class PaymentMethod(models.Model):
    """A card the customer saved for automatic top-ups. ``pending`` while the customer
    completes the provider's setup (Stripe: a SetupIntent, ``setup_reference``) in their
    browser, ``active`` once the provider says it worked, ``failed`` when the setup was
    cancelled, ``removed`` when the customer deleted it (kept: top-ups point at it)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACTIVE = "active", "Active"
        FAILED = "failed", "Failed"
        REMOVED = "removed", "Removed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payment_methods"
    )
    provider = models.CharField(max_length=50)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    setup_reference = models.CharField(
        max_length=120, blank=True, help_text="Stripe: the SetupIntent (seti_...)."
    )
    provider_method_id = models.CharField(
        max_length=120, blank=True, help_text="Stripe: the PaymentMethod (pm_...)."
    )
    brand = models.CharField(max_length=20, blank=True)
    last4 = models.CharField(max_length=4, blank=True)
    exp_month = models.PositiveSmallIntegerField(null=True, blank=True)
    exp_year = models.PositiveSmallIntegerField(null=True, blank=True)
    failure_message = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "setup_reference"],
                condition=~Q(setup_reference=""),
                name="payment_method_setup_unique",
            ),
            models.CheckConstraint(
                condition=~Q(status="active") | ~Q(provider_method_id=""),
                name="payment_method_active_is_known",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.brand or self.provider} ****{self.last4 or '????'} ({self.status})"


class TopUp(models.Model):
    # Columns added after the first release carry database defaults too (db_default), so
    # rows written by plain SQL (the benchmarks' seeds, an old app host during a rolling
    # upgrade) get them.

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    class Origin(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        AUTO = "auto", "Auto top-up"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="top_ups")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    origin = models.CharField(
        max_length=10, choices=Origin.choices, default=Origin.CUSTOMER, db_default="customer"
    )
    provider = models.CharField(max_length=50)
    # Stripe: the PaymentIntent (pi_...), recorded once the provider answered.
    provider_reference = models.CharField(max_length=120, blank=True)
    # The payer's reference (an idempotency key, a bank transfer reference): the same
    # reference on the same wallet is one top-up, credited once.
    reference = models.CharField(max_length=255)
    payment_method = models.ForeignKey(
        PaymentMethod, null=True, blank=True, on_delete=models.PROTECT, related_name="top_ups"
    )
    # Attempts the provider refused (a declined card, authentication required): the top-up
    # stays pending until the provider cancels or expires it; the last refusal is kept.
    failed_attempts = models.PositiveIntegerField(default=0, db_default=0)
    failure_code = models.CharField(max_length=60, blank=True, db_default="")
    failure_message = models.CharField(max_length=255, blank=True, db_default="")
    # The part of the credit that paid the wallet's debt (a reversal-kind entry).
    debt_paid = models.BigIntegerField(default=0, db_default=0)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    ledger_entry = models.OneToOneField(
        LedgerEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="top_up"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="top_up_amount_positive"),
            models.UniqueConstraint(fields=["wallet", "reference"], name="top_up_reference_unique"),
            models.CheckConstraint(
                condition=~Q(status="succeeded") | Q(ledger_entry__isnull=False),
                name="top_up_succeeded_is_booked",
            ),
            models.UniqueConstraint(
                fields=["provider", "provider_reference"],
                condition=~Q(provider_reference=""),
                name="top_up_provider_reference_unique",
            ),
            # Never two automatic top-ups in flight for one wallet.
            models.UniqueConstraint(
                fields=["wallet"],
                condition=Q(origin="auto", status="pending"),
                name="top_up_one_auto_in_flight",
            ),
            models.CheckConstraint(
                condition=Q(debt_paid__gte=0, debt_paid__lte=F("amount")),
                name="top_up_debt_paid_within_amount",
            ),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="top_up_status_created")]

    def __str__(self) -> str:
        return f"top-up {format_minor_units(self.amount, self.currency)} ({self.status})"


class AutoTopUp(models.Model):
    """A wallet's automatic top-up: when a spend takes the available balance below
    ``threshold``, the saved ``payment_method`` is charged ``amount`` off-session, one
    at a time. The runner (``payments.auto``) works the rows that are ``due``; a refusal
    (declined, authentication required) is remembered and retried with backoff, at most
    a set number of attempts a day."""

    wallet = models.OneToOneField(
        Wallet, primary_key=True, on_delete=models.PROTECT, related_name="auto_top_up"
    )
    payment_method = models.ForeignKey(PaymentMethod, on_delete=models.PROTECT, related_name="auto_top_ups")
    threshold = models.BigIntegerField()
    amount = models.BigIntegerField()
    # Set when a top-up is wanted (the balance crossed the threshold), cleared when one
    # succeeded or none is needed any more (it stays set while one is in flight, so a
    # runner that died mid-attempt leaves it to the next); the runner works only due rows
    # whose time has come.
    due_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # A runner's claim, so two runners never start the same wallet's top-up.
    claimed_until = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_failure_code = models.CharField(max_length=60, blank=True)
    last_failure_message = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(threshold__gt=0), name="auto_top_up_threshold_positive"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="auto_top_up_amount_positive"),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"], condition=Q(due_at__isnull=False), name="auto_top_up_due"
            ),
        ]

    def __str__(self) -> str:
        return f"auto top-up of {self.wallet_id}"


class PaymentEvent(models.Model):
    """Each event a payment provider sent us (Stripe's ``evt_...``), recorded once: the
    unique key is what makes a redelivered or repeated webhook change nothing twice.
    Written in the transaction that applies the event."""

    provider = models.CharField(max_length=50)
    event_id = models.CharField(max_length=120)
    type = models.CharField(max_length=80)
    object_id = models.CharField(
        max_length=120, blank=True, help_text="The object it is about (pi_, ch_, dp_...)."
    )
    outcome = models.CharField(max_length=40, help_text="What applying it did.")
    occurred_at = models.DateTimeField(null=True, blank=True, help_text="When the provider made it.")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="payment_event_once"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class ParkedPayment(models.Model):
    """A payment the provider says succeeded that matches no top-up (its metadata names
    none we know, or another currency): kept for an operator, reported by reconcile,
    never dropped and never guessed onto a wallet."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.CharField(max_length=50)
    payment_reference = models.CharField(max_length=120, help_text="Stripe: the PaymentIntent (pi_...).")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    metadata = models.JSONField(default=dict, blank=True)
    why = models.CharField(max_length=255)
    event_id = models.CharField(max_length=120, blank=True)
    parked_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    resolution = models.TextField(blank=True)

    class Meta:
        ordering = ["-parked_at"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "payment_reference"], name="parked_payment_once"),
            models.CheckConstraint(
                condition=Q(resolved_at__isnull=True) | ~Q(resolution=""),
                name="parked_payment_resolution_said",
            ),
        ]

    def __str__(self) -> str:
        return f"parked {self.payment_reference}"


class PaymentReversal(models.Model):
    """Money the provider took back from a succeeded top-up (a card refund, a dispute),
    applied once per ``reference`` (I5): the part the available balance covered was
    taken by a ``reversal`` ledger entry, the rest became the wallet's debt. A dispute,
    or a reversal that left debt, freezes the wallet (``frozen_at`` once done)."""

    class Kind(models.TextChoices):
        REFUND = "refund", "Card refund"
        DISPUTE = "dispute", "Dispute"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    top_up = models.ForeignKey(TopUp, on_delete=models.PROTECT, related_name="reversals")
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="reversals")
    provider = models.CharField(max_length=50)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    reference = models.CharField(
        max_length=160, help_text="What it reverses at the provider (a dispute, a refund total)."
    )
    amount = models.BigIntegerField(help_text="Minor units the provider took back.")
    taken = models.BigIntegerField(help_text="Minor units taken from the wallet's available balance.")
    debt_added = models.BigIntegerField(
        help_text="Minor units the wallet could not cover: its debt grew by this."
    )
    ledger_entry = models.OneToOneField(
        LedgerEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="reversal"
    )
    created_at = models.DateTimeField(default=timezone.now)
    frozen_at = models.DateTimeField(null=True, blank=True, help_text="When the wallet was frozen for it.")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "reference"], name="payment_reversal_once"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_reversal_amount_positive"),
            models.CheckConstraint(
                condition=Q(taken__gte=0, debt_added__gte=0, amount=F("taken") + F("debt_added")),
                name="payment_reversal_parts_add_up",
            ),
            models.CheckConstraint(
                condition=Q(taken=0, ledger_entry__isnull=True) | Q(taken__gt=0, ledger_entry__isnull=False),
                name="payment_reversal_taken_is_booked",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.reference}: {self.amount}"


class Adjustment(models.Model):
    """An operator's correction of a balance, with the reason and who made it. The money
    moves by the ledger entry it points at."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="adjustments")
    amount = models.BigIntegerField()
    reason = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    ledger_entry = models.OneToOneField(LedgerEntry, on_delete=models.PROTECT, related_name="adjustment")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="adjustment_amount_not_zero"),
            models.CheckConstraint(condition=~Q(reason=""), name="adjustment_reason_required"),
        ]
        permissions = [("make_adjustment", "Can adjust a wallet's balance")]

    def __str__(self) -> str:
        return f"adjustment {self.amount} on {self.wallet_id}"


class InvoiceSeries(models.Model):
    """The counter of one invoice number series (``INV-2026``). Locked FOR UPDATE in the
    transaction that issues the invoice, so numbers are gapless (I7): a rolled-back issue
    rolls the counter back with it, which a database sequence would not."""

    series = models.CharField(primary_key=True, max_length=20)
    last_number = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "invoice series"
        constraints = [
            models.CheckConstraint(condition=Q(last_number__gte=0), name="invoice_series_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.series} (last {self.last_number})"


class Invoice(models.Model):
    """One customer's invoice in one currency for a billing period: the settled charges of
    the period and any earlier one that settled late (I8). Immutable once issued: a
    database trigger refuses UPDATE and DELETE."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    series = models.CharField(max_length=20)
    sequence = models.BigIntegerField(help_text="The invoice's number within its series.")
    number = models.CharField(max_length=32, unique=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="invoices")
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="invoices")
    currency = models.CharField(max_length=3)
    # The billing period, half-open: [period_start, period_end).
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    issued_at = models.DateTimeField(default=timezone.now)
    total = models.BigIntegerField()
    # The wallet's last ledger sequence when the invoice was issued: every charge up to
    # it dated before period_end is on this invoice or an earlier one (I8's check).
    ledger_sequence = models.BigIntegerField()

    class Meta:
        ordering = ["-issued_at", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["series", "sequence"], name="invoice_number_unique_in_series"),
            models.UniqueConstraint(
                fields=["owner", "currency", "period_start"], name="invoice_one_per_customer_period"
            ),
            models.CheckConstraint(condition=Q(sequence__gte=1), name="invoice_sequence_positive"),
            models.CheckConstraint(condition=Q(total__gt=0), name="invoice_total_positive"),
            models.CheckConstraint(
                condition=Q(period_end__gt=F("period_start")), name="invoice_period_ordered"
            ),
        ]
        indexes = [models.Index(fields=["wallet", "period_end"], name="invoice_wallet_period")]

    def __str__(self) -> str:
        return self.number

    def money(self, amount: int) -> str:
        return format_minor_units(amount, self.currency)


class InvoiceLine(models.Model):
    """One service's charges of one month on an invoice (a charge with no service gets a
    line of its own). The line's amount is the sum of its charges; each settled charge
    points at its line (``SettledCharge.invoice_line``, set once), which puts it on at
    most one line, in the database (I8)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    context = models.CharField(max_length=20)
    subject_id = models.UUIDField(
        null=True, blank=True, help_text="The server, subscription or volume its charges paid for."
    )
    description = models.CharField(max_length=255)
    amount = models.BigIntegerField(help_text="Minor units charged (positive): the sum of its charges.")
    # The latest of its charges' dates, and the span their periods cover (when they have one).
    transaction_date = models.DateTimeField()
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["transaction_date", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="invoice_line_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.description}: {self.amount}"


class SettledCharge(models.Model):
    """A selling context's charge as Billing booked it: the applied-once record of
    settlement (I5: its key is the charge's id, so a charge is applied at most once) and
    the map from the charge to the ledger entry that settled it together with the other
    charges of its wallet, context and run. Invoices and refunds work on these, never on
    entries, which may group many charges. Append-only in the database, except that
    ``invoice_line`` is set once, in the transaction that issues the invoice (I8)."""

    charge_id = models.UUIDField(primary_key=True, editable=False, help_text="The context's charge.")
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="settled_charges")
    context = models.CharField(max_length=20)
    amount = models.BigIntegerField(help_text="Minor units charged (positive).")
    currency = models.CharField(max_length=3)
    subject_id = models.UUIDField(
        null=True, blank=True, help_text="The server, subscription or volume paid for."
    )
    description = models.CharField(max_length=255)
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    transaction_date = models.DateTimeField()
    ledger_entry = models.ForeignKey(LedgerEntry, on_delete=models.PROTECT, related_name="charges")
    invoice_line = models.ForeignKey(
        InvoiceLine, null=True, blank=True, on_delete=models.PROTECT, related_name="charges"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["transaction_date", "charge_id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="settled_charge_amount_positive"),
            models.CheckConstraint(
                condition=Q(currency__regex=r"^[A-Z]{3}$"), name="settled_charge_currency_iso4217"
            ),
            models.CheckConstraint(
                condition=Q(period_start__isnull=True)
                | Q(period_end__isnull=True)
                | Q(period_end__gte=F("period_start")),
                name="settled_charge_period_ordered",
            ),
        ]
        indexes = [
            # The invoicing run's question: a wallet's settled charges on no line yet,
            # dated before a month's end. Small: invoiced charges leave it.
            models.Index(
                fields=["wallet", "transaction_date"],
                condition=Q(invoice_line__isnull=True),
                name="settled_charge_uninvoiced",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.context} charge {self.charge_id}: {self.amount}"


class Refund(models.Model):
    """Money given back for one settled charge: at most once (the one-to-one link to the
    charge) and at most its amount (checked under the wallet lock, and by
    reconciliation). The money moves by the refund's own ledger entry, a credit."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="refunds")
    charge = models.OneToOneField(
        SettledCharge, on_delete=models.PROTECT, related_name="refund", help_text="The charge refunded."
    )
    amount = models.BigIntegerField()
    reason = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    ledger_entry = models.OneToOneField(LedgerEntry, on_delete=models.PROTECT, related_name="refund_of")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive"),
            models.CheckConstraint(condition=~Q(reason=""), name="refund_reason_required"),
        ]
        permissions = [("make_refund", "Can refund a settled charge")]

    def __str__(self) -> str:
        return f"refund {self.amount} of {self.charge_id}"
