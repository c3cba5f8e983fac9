"""Automatic top-ups (iaas.billing.payments.auto): a write that takes a wallet's available
balance below its owner's threshold publishes AutoTopUpDue with its own events (the
purchase pays no statement for it); Billing's handler marks the top-up due; the runner
charges the saved card outside any transaction, one top-up in flight per wallet; a
refusal fails that top-up with a sentence for the customer and waits before the next
attempt, at most IAAS_AUTO_TOP_UP_DAILY_ATTEMPTS a day; a success, whenever it is known,
clears the failures."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from iaas.billing import batch, selectors, services
from iaas.billing.locks import auto_top_ups_claim
from iaas.billing.models import AutoTopUp, LedgerEntry, PaymentMethod, TopUp, Wallet
from iaas.billing.payments import PaymentOutcome, auto, methods
from iaas.cloud import services as cloud_services
from iaas.contracts import bus
from iaas.contracts.billing import ReserveRequest
from iaas.contracts.errors import NotFound, PaymentProviderUnavailable, WalletNotFound
from iaas.contracts.events import AutoTopUpDue, LowBalanceReached, TopUpFailed
from iaas.contracts.models import OutboxMessage
from tests.billing.payment_doubles import refused, script_provider
from tests.factories import UserFactory, billing_consistent, funded_wallet

pytestmark = pytest.mark.django_db

HOUR = dt.timedelta(hours=1)


@pytest.fixture
def operator(db):
    return UserFactory(username="finance", is_staff=True)


@pytest.fixture
def card(customer) -> PaymentMethod:
    """The customer's saved card (the configured provider's)."""
    return methods.payment_method_start(owner_id=customer.id).method


def set_up(wallet, card, *, threshold=5_000, amount=10_000) -> AutoTopUp:
    return auto.auto_top_up_set(
        wallet_id=wallet.id,
        owner_id=wallet.owner_id,
        threshold=threshold,
        amount=amount,
        payment_method_id=card.id,
    )


def reserve(wallet, amount, *, context="cloud"):
    with transaction.atomic():
        return services.funds_reserve(
            wallet_id=wallet.id,
            owner_id=wallet.owner_id,
            context=context,
            currency=wallet.currency,
            amount=amount,
            minimum=amount,
        )


def dues(published) -> list[AutoTopUpDue]:
    return [event for event in published if isinstance(event, AutoTopUpDue)]


def row(wallet) -> AutoTopUp:
    return AutoTopUp.objects.get(pk=wallet.pk)


def available(wallet) -> int:
    wallet.refresh_from_db()
    return wallet.available


def auto_top_ups(wallet) -> list[TopUp]:
    return list(TopUp.objects.filter(wallet=wallet, origin="auto").order_by("created_at"))


def run(**kwargs) -> dict:
    return auto.auto_top_ups_run(**kwargs)


# --- Setting it up ---------------------------------------------------------------------------------


def test_the_owner_sets_it_up_and_the_wallet_carries_the_threshold(wallet, card):
    setting = set_up(wallet, card, threshold=2_000, amount=5_000)
    assert (setting.threshold, setting.amount, setting.payment_method_id) == (2_000, 5_000, card.id)
    assert setting.due_at is None  # 100.00 available, above 20.00
    wallet.refresh_from_db()
    assert wallet.auto_top_up_below == 2_000
    assert selectors.auto_top_up_get(owner_id=wallet.owner_id, wallet_id=wallet.id) == setting


@pytest.mark.parametrize("bad", [0, -1, 100_000_001, 10.0, "10", True, None])
def test_threshold_and_amount_are_whole_minor_units_within_the_top_up_limit(wallet, card, bad):
    with pytest.raises(ValueError, match="threshold is 1 to 100000000 minor units"):
        set_up(wallet, card, threshold=bad)
    with pytest.raises(ValueError, match="amount is 1 to 100000000 minor units"):
        set_up(wallet, card, amount=bad)
    assert not AutoTopUp.objects.exists()


def test_another_customers_wallet_or_card_is_not_found(wallet, card, other_customer):
    others_card = methods.payment_method_start(owner_id=other_customer.id).method
    others_wallet = funded_wallet(other_customer)
    with pytest.raises(NotFound):
        set_up(wallet, others_card)
    with pytest.raises(WalletNotFound):
        auto.auto_top_up_set(
            wallet_id=others_wallet.id,
            owner_id=card.owner_id,
            threshold=1,
            amount=1,
            payment_method_id=card.id,
        )
    with pytest.raises(NotFound):
        selectors.auto_top_up_get(owner_id=other_customer.id, wallet_id=wallet.id)
    assert not AutoTopUp.objects.exists()


@pytest.mark.parametrize("status", ["pending", "failed", "removed"])
def test_only_an_active_card_can_be_chosen(wallet, card, status):
    PaymentMethod.objects.filter(pk=card.pk).update(status=status)
    with pytest.raises(auto.PaymentMethodNotUsable, match=f"is {status}"):
        set_up(wallet, card)
    assert not AutoTopUp.objects.exists()


def test_a_wallet_already_below_the_threshold_is_due_at_once(wallet, card):
    """Who says "keep me above 150.00" while at 100.00 expects a top-up."""
    setting = set_up(wallet, card, threshold=15_000, amount=10_000)
    assert setting.due_at is not None
    assert run()["credited"] == 1
    assert available(wallet) == 20_000


def test_a_threshold_moved_above_what_is_available_makes_it_due(wallet, card):
    set_up(wallet, card, threshold=1_000)
    assert row(wallet).due_at is None
    assert set_up(wallet, card, threshold=20_000).due_at is not None
    assert set_up(wallet, card, threshold=1_000).due_at is None  # and back: not any more


def test_deleting_it_clears_the_wallets_threshold(wallet, card):
    set_up(wallet, card)
    auto.auto_top_up_delete(wallet_id=wallet.id, owner_id=wallet.owner_id)
    assert not AutoTopUp.objects.exists()
    wallet.refresh_from_db()
    assert wallet.auto_top_up_below is None
    with pytest.raises(NotFound):
        auto.auto_top_up_delete(wallet_id=wallet.id, owner_id=wallet.owner_id)


def test_the_database_refuses_a_threshold_that_is_not_positive(wallet):
    with pytest.raises(IntegrityError), transaction.atomic():
        Wallet.objects.filter(pk=wallet.pk).update(auto_top_up_below=0)


# --- The trigger: a crossing publishes AutoTopUpDue with the write's own events -----------------------------


def test_a_reserve_that_crosses_the_threshold_publishes_auto_top_up_due_once(wallet, card, published):
    set_up(wallet, card, threshold=5_000)
    reserve(wallet, 4_000)  # 6,000 left: above
    assert dues(published) == []
    reserve(wallet, 2_000)  # 4,000: crossed
    [due] = dues(published)
    assert (due.wallet_id, due.available, due.threshold) == (wallet.id, 4_000, 5_000)
    reserve(wallet, 1_000)  # still below: no second crossing
    assert len(dues(published)) == 1


def test_a_wallet_without_an_auto_top_up_publishes_nothing(wallet, published):
    reserve(wallet, 9_999)
    assert dues(published) == []


def test_the_low_balance_alert_and_the_auto_top_up_are_told_by_the_same_crossing(wallet, card, published):
    services.wallet_low_balance_threshold_set(wallet_id=wallet.id, owner_id=wallet.owner_id, threshold=5_000)
    set_up(wallet, card, threshold=5_000)
    reserve(wallet, 6_000)
    kinds = [type(event) for event in published if isinstance(event, LowBalanceReached | AutoTopUpDue)]
    assert kinds == [LowBalanceReached, AutoTopUpDue]


def test_a_reserve_makes_two_statements_whether_or_not_it_crosses(wallet, card, published):
    """The AutoTopUpDue's outbox row goes in FundsReserved's INSERT; the reserve's UPDATE
    returns the threshold."""
    set_up(wallet, card, threshold=5_000)

    def statements_of(amount) -> list[str]:
        with transaction.atomic(), CaptureQueriesContext(connection) as captured:
            services.funds_reserve(
                wallet_id=wallet.id,
                owner_id=wallet.owner_id,
                context="cloud",
                currency="EUR",
                amount=amount,
                minimum=amount,
            )
        return [
            q["sql"] for q in captured.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))
        ]

    assert len(statements_of(4_000)) == 2
    crossing = statements_of(2_000)
    assert len(crossing) == 2, "\n".join(crossing)
    assert '"auto_top_up_below"' in crossing[0]
    assert "'AutoTopUpDue'" in crossing[1]
    assert "'FundsReserved'" in crossing[1]
    assert len(dues(published)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_purchase_that_crosses_the_threshold_still_makes_six_statements(catalog):
    """As tests/integration/test_query_counts.py measures a purchase. And nothing is charged
    in the purchase's transaction: it only asks."""
    customer = UserFactory()
    wallet = funded_wallet(customer, amount=1_000)
    card = methods.payment_method_start(owner_id=customer.id).method

    def buy():
        cloud_services.server_create(
            owner_id=customer.id, wallet_id=wallet.id, name="vm", plan_id="s-2vcpu-4gb"
        )

    buy()  # the allowance row exists from now on
    set_up(wallet, card, threshold=available(wallet))  # the next purchase crosses it
    with CaptureQueriesContext(connection) as captured:
        buy()
    sql = [q["sql"] for q in captured.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]
    assert len(sql) == 6, "\n".join(sql)
    [due] = OutboxMessage.objects.filter(event_type="AutoTopUpDue")
    assert (due.handler, due.status, due.payload["wallet_id"]) == (
        "billing.auto_top_up_due",
        "pending",
        str(wallet.id),
    )
    assert auto_top_ups(wallet) == []  # nothing charged inside the purchase
    assert row(wallet).due_at is None  # until the event is delivered
    bus.deliver_pending()
    assert row(wallet).due_at is not None
    assert run()["credited"] == 1
    assert [t.status for t in auto_top_ups(wallet)] == ["succeeded"]


def test_a_purchase_that_does_not_cross_publishes_nothing(catalog, customer, card, published):
    wallet = funded_wallet(customer, amount=1_000)
    set_up(wallet, card, threshold=100)
    cloud_services.server_create(owner_id=customer.id, wallet_id=wallet.id, name="vm", plan_id="s-2vcpu-4gb")
    assert available(wallet) >= 100
    assert dues(published) == []


def test_a_batch_reserve_publishes_auto_top_up_due_for_the_wallets_that_cross(customer, card, published):
    crossing, staying = (
        funded_wallet(customer, amount=10_000),
        funded_wallet(customer, amount=10_000, currency="USD"),
    )
    set_up(crossing, card, threshold=5_000)
    set_up(staying, card, threshold=1_000)
    with transaction.atomic():
        batch.funds_reserve_batch(
            context="cloud",
            requests=[
                ReserveRequest(
                    wallet_id=w.id, owner_id=w.owner_id, currency=w.currency, amount=6_000, minimum=6_000
                )
                for w in (crossing, staying)
            ],
        )
    assert [(d.wallet_id, d.available) for d in dues(published)] == [(crossing.id, 4_000)]


def test_an_operators_debit_that_crosses_publishes_auto_top_up_due(wallet, card, operator, published):
    set_up(wallet, card, threshold=5_000)
    services.wallet_adjust(
        wallet_id=wallet.id, amount=-6_000, reason="chargeback fee", operator_id=operator.id
    )
    [due] = dues(published)
    assert due.available == 4_000


def test_auto_top_up_due_is_billings_own_no_customer_is_told():
    assert bus.subscribers(AutoTopUpDue) == ["billing.auto_top_up_due"]
    [subscription] = bus.subscriptions(AutoTopUpDue)
    assert not subscription.relay


# --- The handler --------------------------------------------------------------------------------------


def test_the_handler_marks_it_due_once_and_keeps_a_waiting_attempt_waiting(wallet, card):
    set_up(wallet, card)
    assert auto.auto_top_up_mark_due(wallet_id=wallet.id) is True
    first = row(wallet).due_at
    assert auto.auto_top_up_mark_due(wallet_id=wallet.id) is False  # due already: keeps its time
    assert row(wallet).due_at == first
    later = timezone.now() + 3 * HOUR
    AutoTopUp.objects.filter(pk=wallet.pk).update(due_at=None, next_attempt_at=later)
    auto.auto_top_up_mark_due(wallet_id=wallet.id)
    assert row(wallet).next_attempt_at == later  # a backoff after a refusal is not cut short
    assert auto.auto_top_up_mark_due(wallet_id=uuid.uuid4()) is False


def test_delivering_events_marks_it_due_and_the_loop_charges_the_card(wallet, card):
    set_up(wallet, card, threshold=5_000)
    reserve(wallet, 6_000)
    call_command("deliver_events", stdout=StringIO())  # the delivery, then one round of the runner
    assert [t.status for t in auto_top_ups(wallet)] == ["succeeded"]
    assert available(wallet) == 14_000


# --- The runner -----------------------------------------------------------------------------------------


def crossed(wallet, card, *, threshold=5_000, amount=10_000, spend=6_000):
    """Set up, spend below the threshold, and deliver: the top-up is due."""
    set_up(wallet, card, threshold=threshold, amount=amount)
    reserve(wallet, spend)
    bus.deliver_pending()
    assert row(wallet).due_at is not None


def test_a_due_top_up_is_charged_outside_any_transaction_and_credited(wallet, scripted):
    card = methods.payment_method_start(owner_id=wallet.owner_id).method
    crossed(wallet, card)
    summary = run()
    assert (summary["claimed"], summary["credited"]) == (1, 1)
    [top_up] = auto_top_ups(wallet)
    assert (top_up.status, top_up.amount, top_up.payment_method_id) == ("succeeded", 10_000, card.id)
    assert top_up.reference.startswith(f"auto:{wallet.id}:")
    [charge] = scripted.of("charge_saved")
    assert charge.subject == top_up.id
    assert scripted.inside_a_transaction() == []
    assert available(wallet) == 14_000
    setting = row(wallet)
    assert (setting.due_at, setting.claimed_until, setting.consecutive_failures) == (None, None, 0)
    assert setting.last_attempt_at is not None
    assert LedgerEntry.objects.filter(kind="top_up", source_id=top_up.id).count() == 1
    assert run()["claimed"] == 0  # nothing due any more
    billing_consistent()


def test_a_refused_charge_fails_the_top_up_tells_the_customer_and_waits(
    wallet, scripted, published, time_machine
):
    time_machine.move_to(dt.datetime(2027, 6, 1, 9, 0, tzinfo=dt.UTC), tick=False)
    card = methods.payment_method_start(owner_id=wallet.owner_id).method
    crossed(wallet, card)
    scripted.charges.append(
        refused("authentication_required", "This payment requires authentication.", "pi_1")
    )
    assert run()["refused"] == 1
    [top_up] = auto_top_ups(wallet)
    assert (top_up.status, top_up.failure_code, top_up.failed_attempts) == (
        "failed",
        "authentication_required",
        1,
    )
    [told] = [e for e in published if isinstance(e, TopUpFailed)]
    assert told.top_up_id == top_up.id
    assert "authentication (3-D Secure)" in told.reason
    assert "try again after 2027-06-01 10:00 UTC" in told.reason
    setting = row(wallet)
    assert (setting.consecutive_failures, setting.last_failure_code) == (1, "authentication_required")
    assert setting.last_failure_message == "This payment requires authentication."
    assert setting.next_attempt_at == timezone.now() + HOUR
    assert setting.due_at is not None  # still wanted
    assert [c.subject for c in scripted.of("cancel")] == ["pi_1"]  # the refused payment cancelled
    assert available(wallet) == 4_000
    # Not before its time.
    assert run()["claimed"] == 0
    time_machine.move_to(dt.datetime(2027, 6, 1, 10, 0, tzinfo=dt.UTC), tick=False)
    assert run()["credited"] == 1
    setting = row(wallet)
    assert (setting.consecutive_failures, setting.last_failure_code, setting.due_at) == (0, "", None)
    assert [t.status for t in auto_top_ups(wallet)] == ["failed", "succeeded"]
    billing_consistent()


def test_refusals_wait_longer_each_time_and_at_most_three_a_day(wallet, scripted, time_machine, settings):
    settings.IAAS_AUTO_TOP_UP_DAILY_ATTEMPTS = 3
    start = dt.datetime(2027, 6, 1, 9, 0, tzinfo=dt.UTC)
    time_machine.move_to(start, tick=False)
    card = methods.payment_method_start(owner_id=wallet.owner_id).method
    crossed(wallet, card)
    scripted.charges += [refused() for _ in range(4)]
    assert run()["refused"] == 1
    assert row(wallet).next_attempt_at == start + HOUR
    time_machine.move_to(start + HOUR, tick=False)
    assert run()["refused"] == 1
    assert row(wallet).next_attempt_at == start + 5 * HOUR  # four hours after the second
    time_machine.move_to(start + 5 * HOUR, tick=False)
    assert run()["refused"] == 1
    # Three in 24 hours: the next waits for the first to leave the window (later than 12 h).
    assert row(wallet).next_attempt_at == start + 24 * HOUR
    assert row(wallet).consecutive_failures == 3
    time_machine.move_to(start + 24 * HOUR, tick=False)
    assert run()["refused"] == 1
    assert len(auto_top_ups(wallet)) == 4
    assert len(scripted.of("charge_saved")) == 4


def test_refusals_in_a_row_stop_it_until_the_owner_sets_it_again(
    wallet, scripted, time_machine, settings, published
):
    settings.IAAS_AUTO_TOP_UP_DAILY_ATTEMPTS = 10
    settings.IAAS_AUTO_TOP_UP_GIVE_UP_AFTER = 2
    start = dt.datetime(2027, 6, 1, 9, 0, tzinfo=dt.UTC)
    time_machine.move_to(start, tick=False)
    card = methods.payment_method_start(owner_id=wallet.owner_id).method
    crossed(wallet, card)
    scripted.charges += [refused() for _ in range(3)]
    assert run()["refused"] == 1
    time_machine.move_to(start + HOUR, tick=False)
    assert run()["refused"] == 1
    stopped = row(wallet)
    assert (stopped.consecutive_failures, stopped.due_at, stopped.next_attempt_at) == (2, None, None)
    [*_, last] = [e for e in published if type(e).__name__ == "TopUpFailed"]
    assert "stopped after 2 refusals" in last.reason
    time_machine.move_to(start + 30 * HOUR, tick=False)
    assert run()["claimed"] == 0  # no more tries, no more emails

    auto.auto_top_up_set(
        wallet_id=wallet.id,
        owner_id=wallet.owner_id,
        threshold=5_000,
        amount=10_000,
        payment_method_id=card.id,
    )
    again = row(wallet)
    assert (again.consecutive_failures, again.due_at is not None) == (0, True)
    assert run()["refused"] == 1
    assert row(wallet).next_attempt_at is not None  # one refusal after a fresh start: it waits, not stops


def test_a_runner_that_finds_the_cap_reached_waits_for_the_window(wallet, scripted, time_machine, settings):
    settings.IAAS_AUTO_TOP_UP_DAILY_ATTEMPTS = 1
    start = dt.datetime(2027, 6, 1, 9, 0, tzinfo=dt.UTC)
    time_machine.move_to(start, tick=False)
    card = methods.payment_method_start(owner_id=wallet.owner_id).method
    crossed(wallet, card, amount=100)  # a small top-up: still below after it
    assert run()["credited"] == 1
    assert row(wallet).due_at is not None  # due again: still below
    assert run() == {**dict.fromkeys(auto.RUN_SUMMARY, 0), "claimed": 1, "capped": 1}
    assert row(wallet).next_attempt_at == start + 24 * HOUR
    assert len(auto_top_ups(wallet)) == 1


def test_a_credit_that_leaves_the_wallet_below_makes_it_due_again(wallet, card):
    crossed(wallet, card, threshold=5_000, amount=500)
    assert run()["credited"] == 1
    assert available(wallet) == 4_500
    assert row(wallet).due_at is not None
    assert run()["credited"] == 1
    assert available(wallet) == 5_000
    assert row(wallet).due_at is None


def test_an_unreachable_provider_fails_nothing_and_the_same_top_up_is_tried_again(
    wallet, scripted, time_machine
):
    time_machine.move_to(dt.datetime(2027, 6, 1, 9, 0, tzinfo=dt.UTC), tick=False)
    card = methods.payment_method_start(owner_id=wallet.owner_id).method
    crossed(wallet, card)
    scripted.charges.append(PaymentProviderUnavailable())
    assert run()["unavailable"] == 1
    [pending] = auto_top_ups(wallet)
    assert pending.status == "pending"
    setting = row(wallet)
    assert (setting.consecutive_failures, setting.claimed_until) == (0, None)
    assert setting.next_attempt_at == timezone.now() + auto.PROVIDER_UNAVAILABLE_DELAY
    time_machine.shift(auto.PROVIDER_UNAVAILABLE_DELAY)
    assert run()["credited"] == 1
    [credited] = auto_top_ups(wallet)
    assert (credited.pk, credited.status) == (pending.pk, "succeeded")  # the same top-up: one payment
    assert [c.subject for c in scripted.of("charge_saved")] == [pending.pk, pending.pk]


def test_a_payment_still_processing_is_left_to_the_providers_webhook(wallet, scripted):
    card = methods.payment_method_start(owner_id=wallet.owner_id).method
    crossed(wallet, card)
    scripted.charges.append(PaymentOutcome(succeeded=False, provider_reference="pi_slow"))
    assert run()["waiting"] == 1
    [pending] = auto_top_ups(wallet)
    assert (pending.status, pending.provider_reference) == ("pending", "pi_slow")
    assert row(wallet).next_attempt_at > timezone.now()
    # The webhook says it succeeded: credited, and the automatic top-up is done.
    services.top_up_confirm(top_up_id=pending.id, provider_reference="pi_slow")
    setting = row(wallet)
    assert (setting.due_at, setting.consecutive_failures) == (None, 0)
    assert available(wallet) == 14_000


def test_a_top_up_the_provider_cancels_counts_as_one_failure(wallet, scripted):
    card = methods.payment_method_start(owner_id=wallet.owner_id).method
    crossed(wallet, card)
    scripted.charges.append(PaymentOutcome(succeeded=False, provider_reference="pi_slow"))
    run()
    [pending] = auto_top_ups(wallet)
    services.top_up_fail(top_up_id=pending.id, reason="The payment was cancelled.")
    services.top_up_fail(top_up_id=pending.id, reason="The payment was cancelled.")  # told twice
    setting = row(wallet)
    assert (setting.consecutive_failures, setting.last_failure_code) == (1, "failed")
    assert setting.due_at is not None
    assert setting.next_attempt_at > timezone.now()


def test_a_pending_top_up_left_by_a_runner_that_died_is_resumed_not_doubled(wallet, scripted):
    card = methods.payment_method_start(owner_id=wallet.owner_id).method
    crossed(wallet, card)
    # A runner opened the top-up and died before asking the provider.
    left = services.top_up_open(
        wallet_id=wallet.id,
        owner_id=wallet.owner_id,
        amount=10_000,
        origin="auto",
        payment_method_id=card.id,
        reference=f"auto:{wallet.id}:{uuid.uuid4()}",
    )
    assert run()["credited"] == 1
    [top_up] = auto_top_ups(wallet)
    assert (top_up.pk, top_up.status) == (left.pk, "succeeded")


def test_the_database_holds_one_automatic_top_up_in_flight_per_wallet(wallet, card):
    fields = {"wallet": wallet, "amount": 100, "currency": "EUR", "provider": "sandbox", "origin": "auto"}
    TopUp.objects.create(reference="auto:1", **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        TopUp.objects.create(reference="auto:2", **fields)


def test_a_top_up_no_longer_needed_is_not_charged(wallet, card):
    crossed(wallet, card)
    services.top_up_create(wallet_id=wallet.id, owner_id=wallet.owner_id, amount=5_000)  # by hand
    assert run()["not_needed"] == 1
    assert auto_top_ups(wallet) == []
    assert row(wallet).due_at is None


def test_a_frozen_wallet_is_not_topped_up_automatically_until_it_is_unfrozen(wallet, card):
    crossed(wallet, card)
    services.wallet_set_status(wallet_id=wallet.id, status="frozen")
    assert run()["not_needed"] == 1
    assert auto_top_ups(wallet) == []
    setting = row(wallet)
    assert setting.due_at is not None  # still wanted: nothing re-arms it when unfrozen
    assert setting.next_attempt_at > timezone.now() + dt.timedelta(minutes=50)

    services.wallet_set_status(wallet_id=wallet.id, status="active")
    assert run(now=timezone.now() + dt.timedelta(hours=1, minutes=1))["credited"] == 1
    assert [t.status for t in auto_top_ups(wallet)] == ["succeeded"]


def test_a_card_saved_with_another_provider_is_not_charged(wallet, card, settings):
    crossed(wallet, card)  # saved with the sandbox
    scripted = script_provider(settings)  # an operator switched providers since
    summary = run()
    assert summary["unusable"] == 1
    setting = row(wallet)
    assert (setting.due_at, setting.last_failure_code) == (None, "payment_method_unusable")
    assert scripted.of("charge_saved") == []


def test_a_new_card_starts_afresh(wallet, scripted, time_machine):
    time_machine.move_to(dt.datetime(2027, 6, 1, 9, 0, tzinfo=dt.UTC), tick=False)
    card = methods.payment_method_start(owner_id=wallet.owner_id).method
    crossed(wallet, card)
    scripted.charges.append(refused())
    run()
    assert row(wallet).consecutive_failures == 1
    other = methods.payment_method_start(owner_id=wallet.owner_id).method
    setting = set_up(wallet, other)
    assert (setting.consecutive_failures, setting.last_failure_code) == (0, "")
    assert setting.next_attempt_at == timezone.now()
    assert run()["credited"] == 1


def test_a_claimed_row_is_not_claimed_again_until_its_lease_ends(wallet, card, time_machine):
    time_machine.move_to(dt.datetime(2027, 6, 1, 9, 0, tzinfo=dt.UTC), tick=False)
    crossed(wallet, card)
    now = timezone.now()
    with transaction.atomic():
        assert auto_top_ups_claim(now=now, until=now + auto.CLAIM_LEASE, limit=10) == [wallet.id]
        assert auto_top_ups_claim(now=now, until=now + auto.CLAIM_LEASE, limit=10) == []
    # The runner that claimed it died; after the lease another takes it.
    time_machine.shift(auto.CLAIM_LEASE)
    assert run()["credited"] == 1


def test_the_command_runs_one_round_and_prints_its_summary(wallet, card):
    crossed(wallet, card)
    out = StringIO()
    call_command("run_auto_top_ups", "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert (summary["claimed"], summary["credited"]) == (1, 1)


def test_an_unexpected_error_is_logged_and_the_others_go_on(customer, scripted, caplog):
    card = methods.payment_method_start(owner_id=customer.id).method
    first, second = (
        funded_wallet(customer, amount=10_000),
        funded_wallet(customer, amount=10_000, currency="USD"),
    )
    crossed(first, card)
    crossed(second, card)
    scripted.charges += [RuntimeError("surprise"), None]
    summary = run()
    assert (summary["claimed"], summary["errors"], summary["credited"]) == (2, 1, 1)
    assert "failed unexpectedly" in caplog.text
    assert AutoTopUp.objects.filter(claimed_until__isnull=False).count() == 0


def test_a_runner_whose_lease_ran_out_leaves_the_next_runners_claim_alone(wallet, card):
    crossed(wallet, card)
    now = timezone.now()
    AutoTopUp.objects.filter(pk=wallet.pk).update(claimed_until=now + dt.timedelta(minutes=10))
    auto._release(wallet.id, claimed_until=now - dt.timedelta(minutes=1))  # an old lease's release
    assert row(wallet).claimed_until == now + dt.timedelta(minutes=10)
    auto._release(wallet.id, claimed_until=now + dt.timedelta(minutes=10))  # its own
    assert row(wallet).claimed_until is None
