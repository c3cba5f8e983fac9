"""finish_top_ups against the Stripe double: a top-up whose PaymentIntent was paid at Stripe
but whose webhook never came is credited, once, however often the run repeats; a create
whose answer was lost gets its PaymentIntent recorded; a stale unpaid one is cancelled at
Stripe and failed, its owner told; a provider error is logged and the run goes on
(ARCHITECTURE.md, "Money coming in")."""

from __future__ import annotations

import datetime as dt
import json
import logging
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from iaas.billing import services
from iaas.billing.models import LedgerEntry, TopUp
from iaas.billing.payments import finishing
from iaas.common.cli import EXIT_PROBLEMS
from iaas.contracts.errors import PaymentProviderUnavailable
from tests.factories import funded_wallet

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def card_wallet(customer, stripe_double):
    """The customer's EUR wallet, empty, topped up by card."""
    return funded_wallet(customer, amount=0)


def opened(wallet, amount: int, *, age: dt.timedelta, start: bool = True) -> TopUp:
    """A card top-up opened ``age`` ago, its PaymentIntent created at Stripe (``start``),
    as the customer's POST leaves it."""
    top_up = services.top_up_open(wallet_id=wallet.id, owner_id=wallet.owner_id, amount=amount)
    if start:
        services.top_up_start(top_up_id=top_up.id)
    TopUp.objects.filter(pk=top_up.pk).update(created_at=timezone.now() - age)
    top_up.refresh_from_db()
    return top_up


def finish(*args: str) -> tuple[int, dict]:
    out = StringIO()
    try:
        call_command("finish_top_ups", "--json", *args, stdout=out, stderr=StringIO())
    except SystemExit as exit_:
        return exit_.code, json.loads(out.getvalue())
    return 0, json.loads(out.getvalue())


def credits_of(top_up: TopUp) -> int:
    return LedgerEntry.objects.filter(kind="top_up", source_id=top_up.id).count()


def test_a_payment_whose_webhook_never_came_is_credited_once_also_when_run_twice(
    card_wallet, stripe_double, assert_invariants
):
    top_up = opened(card_wallet, 2_500, age=dt.timedelta(hours=1))
    stripe_double.pay(top_up.provider_reference)  # paid at Stripe; its webhook is never posted

    code, summary = finish()
    assert code == 0
    assert (summary["provider"], summary["to_check"], summary["credited"], summary["failed"]) == (
        "stripe",
        1,
        1,
        [],
    )
    top_up.refresh_from_db()
    card_wallet.refresh_from_db()
    assert (top_up.status, card_wallet.balance, credits_of(top_up)) == ("succeeded", 2_500, 1)

    code, summary = finish()
    assert (code, summary["to_check"], summary["credited"]) == (0, 0, 0)  # no longer pending
    card_wallet.refresh_from_db()
    assert (card_wallet.balance, credits_of(top_up)) == (2_500, 1)
    assert_invariants()


def test_two_runs_at_once_credit_once(card_wallet, stripe_double):
    """Both runs picked the top-up before either credited it: the credit is applied once."""
    top_up = opened(card_wallet, 900, age=dt.timedelta(hours=1))
    stripe_double.pay(top_up.provider_reference)
    now = timezone.now()
    first = finishing.top_ups_due(older_than=dt.timedelta(minutes=15), limit=10, now=now)
    second = finishing.top_ups_due(older_than=dt.timedelta(minutes=15), limit=10, now=now)
    assert first.to_check == second.to_check == [top_up.id]
    assert finishing.due_finish(first, now=now).credited == 1
    assert finishing.due_finish(second, now=now).credited == 1  # says what it is: credited
    card_wallet.refresh_from_db()
    assert (card_wallet.balance, credits_of(top_up)) == (900, 1)


def test_an_unpaid_top_up_stays_pending_and_a_young_one_is_left_alone(card_wallet, stripe_double):
    waiting = opened(card_wallet, 1_000, age=dt.timedelta(hours=2))
    young = opened(card_wallet, 700, age=dt.timedelta(minutes=5))
    stripe_double.pay(young.provider_reference)  # its webhook is on its way: not our business yet
    code, summary = finish()
    assert (code, summary["to_check"], summary["pending"], summary["credited"]) == (0, 1, 1, 0)
    assert TopUp.objects.get(pk=waiting.pk).status == "pending"
    assert TopUp.objects.get(pk=young.pk).status == "pending"
    code, summary = finish("--older-than", "1m")
    assert (summary["to_check"], summary["credited"], summary["pending"]) == (2, 1, 1)
    assert TopUp.objects.get(pk=young.pk).status == "succeeded"


def test_a_create_whose_answer_was_lost_gets_its_payment_intent_recorded_and_credited(
    card_wallet, stripe_double
):
    top_up = opened(card_wallet, 1_200, age=dt.timedelta(hours=1), start=False)
    stripe_double.drop_next_response("/v1/payment_intents")
    with pytest.raises(PaymentProviderUnavailable):
        services.top_up_start(top_up_id=top_up.id)
    [intent] = stripe_double.payment_intents.values()  # Stripe made it; we never heard
    assert TopUp.objects.get(pk=top_up.pk).provider_reference == ""

    code, summary = finish()
    assert (code, summary["pending"]) == (0, 1)
    assert TopUp.objects.get(pk=top_up.pk).provider_reference == intent["id"]
    assert len(stripe_double.payment_intents) == 1  # the same key: the same PaymentIntent

    stripe_double.pay(intent["id"])
    assert finish()[1]["credited"] == 1
    assert credits_of(top_up) == 1


def test_a_top_up_without_its_payment_intent_is_not_asked_past_stripes_key_window(card_wallet, stripe_double):
    """Stripe forgets a key after 24 hours: asking then would create a second PaymentIntent,
    one nobody could pay. The top-up waits for its expiry."""
    top_up = opened(card_wallet, 1_200, age=dt.timedelta(hours=30), start=False)
    code, summary = finish()
    assert (code, summary["to_check"], summary["not_asked"]) == (0, 1, 1)
    assert stripe_double.payment_intents == {}
    assert TopUp.objects.get(pk=top_up.pk).status == "pending"


def test_an_automatic_top_up_without_its_payment_intent_is_left_to_its_runner(card_wallet, stripe_double):
    """Its runner creates its PaymentIntent with a saved card under the top-up's key; ours
    would send other parameters under that key, which Stripe refuses."""
    auto = TopUp.objects.create(
        wallet=card_wallet,
        amount=2_000,
        currency="EUR",
        provider="stripe",
        origin="auto",
        reference="auto:1",
        created_at=timezone.now() - dt.timedelta(hours=1),
    )
    code, summary = finish()
    assert (code, summary["to_check"], summary["not_asked"]) == (0, 1, 1)
    assert stripe_double.payment_intents == {}
    assert TopUp.objects.get(pk=auto.pk).status == "pending"


def test_a_stale_unpaid_top_up_is_cancelled_at_stripe_and_failed(
    card_wallet, stripe_double, settings, published
):
    assert settings.IAAS_TOP_UP_EXPIRE_AFTER_DAYS == 7
    stale = opened(card_wallet, 3_000, age=dt.timedelta(days=7, hours=1))
    fresh = opened(card_wallet, 500, age=dt.timedelta(days=6))
    code, summary = finish()
    assert (code, summary["to_expire"], summary["expired"], summary["to_check"], summary["pending"]) == (
        0,
        1,
        1,
        1,
        1,
    )
    assert stripe_double.get(stale.provider_reference)["status"] == "canceled"
    assert stripe_double.get(fresh.provider_reference)["status"] == "requires_payment_method"
    stale.refresh_from_db()
    assert stale.status == "failed"
    [told] = [event for event in published if type(event).__name__ == "TopUpFailed"]
    assert (told.top_up_id, told.reason) == (stale.id, "The payment was not completed within 7 days.")
    assert TopUp.objects.get(pk=fresh.pk).status == "pending"

    code, summary = finish()  # failed: never asked about again
    assert (summary["to_expire"], summary["expired"]) == (0, 0)
    assert [type(event).__name__ for event in published].count("TopUpFailed") == 1


def test_a_stale_top_up_paid_at_stripe_is_credited_not_cancelled(card_wallet, stripe_double):
    stale = opened(card_wallet, 3_000, age=dt.timedelta(days=8))
    stripe_double.pay(stale.provider_reference)
    code, summary = finish()
    assert (code, summary["to_expire"], summary["credited"], summary["expired"]) == (0, 1, 1, 0)
    assert stripe_double.get(stale.provider_reference)["status"] == "succeeded"
    assert TopUp.objects.get(pk=stale.pk).status == "succeeded"


def test_a_stale_top_up_without_a_payment_intent_is_failed_without_asking(card_wallet, stripe_double):
    stale = opened(card_wallet, 3_000, age=dt.timedelta(days=8), start=False)
    code, summary = finish()
    assert (code, summary["expired"]) == (0, 1)
    assert stripe_double.payment_intents == {}
    assert TopUp.objects.get(pk=stale.pk).status == "failed"


def test_a_provider_error_is_logged_and_the_run_goes_on(card_wallet, stripe_double, caplog):
    first = opened(card_wallet, 400, age=dt.timedelta(hours=2))
    second = opened(card_wallet, 600, age=dt.timedelta(hours=3))
    for top_up in (first, second):
        stripe_double.pay(top_up.provider_reference)
    stripe_double.fail_next(1, status=500, path_prefix="/v1/payment_intents")  # the newest, asked first
    with caplog.at_level(logging.ERROR):
        code, summary = finish()
    assert code == EXIT_PROBLEMS
    assert summary["credited"] == 1
    assert [error["top_up_id"] for error in summary["failed"]] == [str(first.id)]
    assert "PaymentProviderUnavailable" in summary["failed"][0]["error"]
    assert any(f"top-up {first.id}" in record.getMessage() for record in caplog.records)
    assert TopUp.objects.get(pk=second.pk).status == "succeeded"
    assert finish()[1]["credited"] == 1  # the next run finishes it
    assert TopUp.objects.get(pk=first.pk).status == "succeeded"


def test_a_run_is_bounded_by_its_limit(card_wallet, stripe_double):
    made = [opened(card_wallet, 100 + n, age=dt.timedelta(hours=1 + n)) for n in range(3)]
    for top_up in made:
        stripe_double.pay(top_up.provider_reference)
    code, summary = finish("--limit", "2")
    assert (code, summary["to_check"], summary["credited"]) == (0, 2, 2)
    assert TopUp.objects.get(pk=made[2].pk).status == "pending"  # the oldest waits for the next run


def test_dry_run_asks_nothing(card_wallet, stripe_double):
    top_up = opened(card_wallet, 100, age=dt.timedelta(hours=1))
    stripe_double.pay(top_up.provider_reference)
    asked = len(stripe_double.requests)
    code, summary = finish("--dry-run")
    assert (code, summary["dry_run"], summary["to_check"]) == (0, True, 1)
    assert "credited" not in summary
    assert len(stripe_double.requests) == asked
    assert TopUp.objects.get(pk=top_up.pk).status == "pending"


def test_bad_arguments_are_refused(card_wallet, stripe_double):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("finish_top_ups", "--limit", "0", stdout=StringIO())
    with pytest.raises(CommandError):
        call_command("finish_top_ups", "--older-than", "soon", stdout=StringIO())


def test_the_text_summary_says_what_became_of_them(card_wallet, stripe_double):
    paid = opened(card_wallet, 100, age=dt.timedelta(hours=1))
    stripe_double.pay(paid.provider_reference)
    opened(card_wallet, 200, age=dt.timedelta(days=9))
    out = StringIO()
    call_command("finish_top_ups", "--dry-run", stdout=out)
    assert out.getvalue().strip() == (
        "stripe: would ask about 1 top-up(s) pending longer than 15m and expire 1 (dry run)"
    )
    out = StringIO()
    call_command("finish_top_ups", stdout=out)
    assert out.getvalue().strip() == (
        "stripe: 1 credited, 1 expired, 0 still pending, 0 failed meanwhile, "
        "0 not asked (no PaymentIntent known), 0 could not be asked (logged)"
    )


def test_a_top_up_failed_after_the_run_picked_it_is_not_asked_about(card_wallet, stripe_double):
    top_up = opened(card_wallet, 300, age=dt.timedelta(hours=1))
    now = timezone.now()
    due = finishing.top_ups_due(older_than=dt.timedelta(minutes=15), limit=10, now=now)
    services.top_up_fail(top_up_id=top_up.id, reason="cancelled")  # its cancellation webhook came first
    asked = len(stripe_double.requests)
    report = finishing.due_finish(due, now=now)
    assert (report.failed_meanwhile, report.pending, report.credited) == (1, 0, 0)
    assert len(stripe_double.requests) == asked
