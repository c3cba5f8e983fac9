"""Saved cards and automatic top-ups through Stripe, end to end against the Stripe double:
the customer's POST starts a SetupIntent, the double plays the browser completing it, and
Stripe's signed webhooks make the card usable; automatic top-ups charge it off-session,
outside any transaction, with the top-up's id as the idempotency key, so a lost answer
retried makes one payment; a refusal fails the top-up, tells the customer and cancels the
PaymentIntent at Stripe."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from iaas.billing import services
from iaas.billing.models import AutoTopUp, LedgerEntry, PaymentCustomer, PaymentMethod, TopUp
from iaas.billing.payments import auto
from iaas.contracts.models import OutboxMessage
from tests.api.conftest import client_for
from tests.factories import funded_wallet

pytestmark = pytest.mark.django_db(transaction=True)

METHODS = "/api/v1/payment-methods/"


@pytest.fixture
def api(customer):
    return client_for(customer)


@pytest.fixture
def card_wallet(customer, stripe_double):
    """The customer's EUR wallet with 10.00, paid by a card top-up that Stripe confirmed."""
    wallet = funded_wallet(customer, amount=0)
    paid = services.top_up_open(wallet_id=wallet.id, owner_id=customer.id, amount=1_000)
    services.top_up_confirm(top_up_id=paid.id, provider_reference="pi_paid_before")
    wallet.refresh_from_db()
    return wallet


def last_event(double, event_type: str) -> dict:
    return double.events_of(event_type)[-1]


def start_saving(api) -> dict:
    response = api.post(METHODS, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def setup_of(double, answer) -> dict:
    [intent] = [
        s for s in double.setup_intents.values() if s["metadata"].get("payment_method_id") == answer["id"]
    ]
    return intent


def save_card(api, double, webhook, card: str = "pm_card_visa") -> dict:
    answer = start_saving(api)
    intent = setup_of(double, answer)
    double.confirm_setup(intent["id"], card)
    if double.get(intent["id"])["status"] == "requires_action":
        double.authenticate(intent["id"])  # the customer passes 3-D Secure in the browser
    assert webhook(last_event(double, "setup_intent.succeeded")) == ["method_active"]
    return api.get(f"{METHODS}{answer['id']}/").json()


def set_auto_top_up(api, wallet, card, *, threshold: int, amount: int = 2_000) -> dict:
    response = api.put(
        f"/api/v1/wallets/{wallet.id}/auto-top-up/",
        {"threshold": threshold, "amount": amount, "payment_method": card["id"]},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def auto_top_ups(wallet) -> list[TopUp]:
    return list(TopUp.objects.filter(wallet=wallet, origin="auto").order_by("created_at"))


# --- Saving a card ------------------------------------------------------------------------------------


def test_a_card_saved_through_stripe_becomes_active_with_its_details(api, stripe_double, webhook):
    answer = start_saving(api)
    intent = setup_of(stripe_double, answer)
    assert (answer["status"], answer["provider"]) == ("pending", "stripe")
    assert (answer["client_secret"], answer["publishable_key"]) == (intent["client_secret"], "pk_test_double")
    customer = PaymentCustomer.objects.get(provider="stripe").provider_customer_id
    assert (intent["usage"], intent["customer"]) == ("off_session", customer)

    stripe_double.confirm_setup(intent["id"], "pm_card_visa")
    assert webhook(last_event(stripe_double, "setup_intent.succeeded")) == ["method_active"]
    shown = api.get(f"{METHODS}{answer['id']}/").json()
    # The card's details come from Stripe after the event's transaction.
    assert (shown["status"], shown["brand"], shown["last4"]) == ("active", "visa", "4242")
    assert shown["exp_month"] is not None
    method = PaymentMethod.objects.get(pk=answer["id"])
    assert (method.setup_reference, method.provider_method_id) == (
        intent["id"],
        stripe_double.get(intent["id"])["payment_method"],
    )
    # The event again: nothing more.
    assert webhook(last_event(stripe_double, "setup_intent.succeeded")) == ["duplicate"]


def test_a_declined_setup_leaves_the_method_pending_saying_why(api, stripe_double, webhook):
    answer = start_saving(api)
    stripe_double.confirm_setup(setup_of(stripe_double, answer)["id"], "pm_card_chargeDeclined")
    assert webhook(last_event(stripe_double, "setup_intent.setup_failed")) == ["attempt_failed"]
    shown = api.get(f"{METHODS}{answer['id']}/").json()
    assert (shown["status"], shown["failure_message"]) == ("pending", "Your card was declined.")


def test_removing_a_card_detaches_it_at_stripe(api, stripe_double, webhook):
    card = save_card(api, stripe_double, webhook)
    reference = PaymentMethod.objects.get(pk=card["id"]).provider_method_id
    assert stripe_double.get(reference)["customer"] is not None
    assert api.delete(f"{METHODS}{card['id']}/").status_code == 204
    assert stripe_double.get(reference)["customer"] is None
    assert api.delete(f"{METHODS}{card['id']}/").status_code == 204  # Stripe's "not attached" is fine


def test_a_setup_completed_after_the_method_was_removed_has_its_card_detached(api, stripe_double, webhook):
    answer = start_saving(api)
    assert api.delete(f"{METHODS}{answer['id']}/").status_code == 204  # nothing to detach yet
    intent = setup_of(stripe_double, answer)
    stripe_double.confirm_setup(intent["id"], "pm_card_visa")
    assert webhook(last_event(stripe_double, "setup_intent.succeeded")) == ["method_removed"]
    late = stripe_double.get(intent["id"])["payment_method"]
    assert stripe_double.get(late)["customer"] is None
    assert PaymentMethod.objects.get(pk=answer["id"]).status == "removed"


# --- Automatic top-ups ---------------------------------------------------------------------------------


def test_an_automatic_top_up_charges_the_saved_card_off_session(
    api, stripe_double, webhook, card_wallet, assert_invariants
):
    card = save_card(api, stripe_double, webhook)
    shown = set_auto_top_up(api, card_wallet, card, threshold=1_500)  # 10.00 is below 15.00
    assert shown["due"] is True
    assert auto.auto_top_ups_run()["credited"] == 1
    [top_up] = auto_top_ups(card_wallet)
    [intent] = [i for i in stripe_double.payment_intents.values() if i["metadata"].get("origin") == "auto"]
    assert (intent["status"], intent["amount"], intent["metadata"]["top_up_id"]) == (
        "succeeded",
        2_000,
        str(top_up.id),
    )
    assert intent["payment_method"] == PaymentMethod.objects.get(pk=card["id"]).provider_method_id
    assert (top_up.status, top_up.provider_reference) == ("succeeded", intent["id"])
    # Stripe's webhook says so too, later: credited once.
    webhook(last_event(stripe_double, "payment_intent.succeeded"))
    assert LedgerEntry.objects.filter(kind="top_up", source_id=top_up.id).count() == 1
    card_wallet.refresh_from_db()
    assert card_wallet.available == 3_000
    assert api.get(f"/api/v1/wallets/{card_wallet.id}/auto-top-up/").json()["due"] is False
    assert_invariants()


def test_a_card_asking_for_authentication_fails_the_top_up_and_its_payment_is_cancelled(
    api, stripe_double, webhook, card_wallet
):
    card = save_card(api, stripe_double, webhook, card="pm_card_authenticationRequired")
    set_auto_top_up(api, card_wallet, card, threshold=1_500)
    assert auto.auto_top_ups_run()["refused"] == 1
    [top_up] = auto_top_ups(card_wallet)
    assert (top_up.status, top_up.failure_code) == ("failed", "authentication_required")
    assert stripe_double.get(top_up.provider_reference)["status"] == "canceled"
    [told] = (
        OutboxMessage.objects.filter(event_type="TopUpFailed", payload__top_up_id=str(top_up.id))
        .values_list("payload", flat=True)
        .distinct()[:1]
    )
    assert "3-D Secure" in told["reason"]
    # Stripe's own events about it change nothing more.
    webhook(last_event(stripe_double, "payment_intent.payment_failed"))
    assert webhook(last_event(stripe_double, "payment_intent.canceled")) == ["failed"]
    top_up.refresh_from_db()
    assert top_up.failed_attempts == 1
    shown = api.get(f"/api/v1/wallets/{card_wallet.id}/auto-top-up/").json()
    assert (shown["consecutive_failures"], shown["last_failure_code"], shown["due"]) == (
        1,
        "authentication_required",
        True,
    )
    assert shown["next_attempt_at"] is not None


def test_a_declined_charge_fails_the_top_up_saying_so(api, stripe_double, webhook, card_wallet):
    card = save_card(api, stripe_double, webhook, card="pm_card_chargeCustomerFail")
    set_auto_top_up(api, card_wallet, card, threshold=1_500)
    assert auto.auto_top_ups_run()["refused"] == 1
    [top_up] = auto_top_ups(card_wallet)
    assert (top_up.status, top_up.failure_code) == ("failed", "card_declined")
    row = AutoTopUp.objects.get(pk=card_wallet.pk)
    assert (row.consecutive_failures, row.last_failure_code) == (1, "card_declined")


def test_an_answer_lost_after_stripe_charged_is_retried_into_the_same_payment(
    api, stripe_double, webhook, card_wallet, assert_invariants
):
    card = save_card(api, stripe_double, webhook)
    set_auto_top_up(api, card_wallet, card, threshold=1_500)
    stripe_double.drop_next_response("/v1/payment_intents")
    assert auto.auto_top_ups_run()["unavailable"] == 1
    [pending] = auto_top_ups(card_wallet)
    assert pending.status == "pending"  # nothing failed
    AutoTopUp.objects.filter(pk=card_wallet.pk).update(next_attempt_at=timezone.now())  # its retry time
    assert auto.auto_top_ups_run()["credited"] == 1
    intents = [i for i in stripe_double.payment_intents.values() if i["metadata"].get("origin") == "auto"]
    assert [(i["status"], i["metadata"]["top_up_id"]) for i in intents] == [("succeeded", str(pending.id))]
    assert [t.status for t in auto_top_ups(card_wallet)] == ["succeeded"]
    assert_invariants()


def test_a_pending_auto_top_up_never_sent_is_not_charged_to_a_removed_card(
    api, card_wallet, stripe_double, webhook
):
    """Stripe was down when the auto top-up opened; the customer then swapped cards: the
    old top-up fails unsent (nothing charged to the removed card) and the new card pays."""
    card_a = save_card(api, stripe_double, webhook)
    set_auto_top_up(api, card_wallet, card_a, threshold=5_000)
    stripe_double.fail_next(1, status=500, path_prefix="/v1/payment_intents")
    assert auto.auto_top_ups_run()["unavailable"] == 1
    assert api.delete(f"{METHODS}{card_a['id']}/").status_code == 204
    card_b = save_card(api, stripe_double, webhook, "pm_card_mastercard")
    set_auto_top_up(api, card_wallet, card_b, threshold=5_000)

    assert auto.auto_top_ups_run(now=timezone.now() + dt.timedelta(minutes=2))["credited"] == 1
    [unsent, paid] = auto_top_ups(card_wallet)
    assert (unsent.status, unsent.provider_reference, str(unsent.payment_method_id)) == (
        "failed",
        "",
        card_a["id"],
    )
    assert (paid.status, str(paid.payment_method_id)) == ("succeeded", card_b["id"])
    charged = [pi for pi in stripe_double.payment_intents.values() if pi["status"] == "succeeded"]
    assert len(charged) == 1
    assert charged[0]["metadata"]["top_up_id"] == str(paid.id)
    card_wallet.refresh_from_db()
    assert card_wallet.balance == 1_000 + 2_000
