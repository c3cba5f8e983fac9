"""Card top-ups through Stripe, end to end: the customer's POST, Stripe's double playing the
browser and Stripe, and Stripe's signed webhooks arriving once, twice, late or out of
order (issue 17; ARCHITECTURE.md, "Money coming in")."""

from __future__ import annotations

import logging
import time

import pytest

from iaas.billing.models import LedgerEntry, ParkedPayment, PaymentEvent, TopUp, Wallet
from iaas.contracts import bus
from tests.api.conftest import assert_problem, client_for
from tests.factories import funded_wallet
from tests.payments.conftest import WEBHOOK_SECRET, post_event

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api(customer):
    return client_for(customer)


@pytest.fixture
def card_wallet(customer, stripe_double):
    """The customer's EUR wallet, empty, topped up by card."""
    return funded_wallet(customer, amount=0)


def top_up(api, wallet, amount: int, **headers) -> dict:
    response = api.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": amount}, format="json", **headers)
    assert response.status_code == 201, response.content
    return response.json()


def last_event(double, event_type: str) -> dict:
    return double.events_of(event_type)[-1]


def balance(wallet) -> tuple[int, int, int]:
    wallet.refresh_from_db()
    return wallet.balance, wallet.reserved, wallet.debt


def credits_of(top_up_id) -> int:
    return LedgerEntry.objects.filter(kind="top_up", reference=f"top-up:{top_up_id}").count()


# --- Paying -----------------------------------------------------------------------------------


def test_a_card_top_up_answers_pending_with_the_client_secret_and_credits_when_stripe_says(
    api, card_wallet, stripe_double, webhook, assert_invariants
):
    answer = top_up(api, card_wallet, 2_500)
    [intent] = stripe_double.payment_intents.values()
    assert (answer["status"], answer["provider"], answer["provider_reference"]) == (
        "pending",
        "stripe",
        intent["id"],
    )
    assert (answer["client_secret"], answer["publishable_key"]) == (intent["client_secret"], "pk_test_double")
    assert (intent["amount"], intent["currency"], intent["metadata"]["top_up_id"]) == (
        2_500,
        "eur",
        answer["id"],
    )
    assert balance(card_wallet) == (0, 0, 0)

    stripe_double.pay(intent["id"])
    assert webhook(last_event(stripe_double, "payment_intent.succeeded")) == ["credited"]

    assert balance(card_wallet) == (2_500, 0, 0)
    shown = api.get(f"/api/v1/wallets/{card_wallet.id}/top-ups/{answer['id']}/").json()
    assert (shown["status"], shown["completed_at"] is not None) == ("succeeded", True)
    assert credits_of(answer["id"]) == 1
    assert_invariants()


def test_a_declined_card_leaves_the_top_up_open_and_the_next_card_pays_it(
    api, card_wallet, stripe_double, webhook
):
    answer = top_up(api, card_wallet, 1_000)
    stripe_double.pay(answer["provider_reference"], payment_method="pm_card_chargeDeclined")
    assert webhook(last_event(stripe_double, "payment_intent.payment_failed")) == ["attempt_failed"]
    shown = api.get(f"/api/v1/wallets/{card_wallet.id}/top-ups/{answer['id']}/").json()
    assert (shown["status"], shown["failed_attempts"], shown["failure_code"]) == (
        "pending",
        1,
        "card_declined",
    )
    assert shown["failure_message"]
    assert balance(card_wallet) == (0, 0, 0)

    stripe_double.pay(answer["provider_reference"], payment_method="pm_card_visa")
    assert webhook(last_event(stripe_double, "payment_intent.succeeded")) == ["credited"]
    assert balance(card_wallet) == (1_000, 0, 0)
    assert TopUp.objects.get(pk=answer["id"]).status == "succeeded"


def test_a_cancelled_payment_fails_the_top_up_and_tells_the_owner(
    api, card_wallet, stripe_double, webhook, published
):
    answer = top_up(api, card_wallet, 1_000)
    stripe_double.cancel(answer["provider_reference"], cancellation_reason="abandoned")
    assert webhook(last_event(stripe_double, "payment_intent.canceled")) == ["failed"]
    assert TopUp.objects.get(pk=answer["id"]).status == "failed"
    assert [type(e).__name__ for e in published if type(e).__name__ == "TopUpFailed"] == ["TopUpFailed"]
    assert balance(card_wallet) == (0, 0, 0)


# --- Webhooks repeated, late, out of order ------------------------------------------------------


def test_a_success_told_twice_and_at_once_credits_once(api, card_wallet, stripe_double, webhook):
    answer = top_up(api, card_wallet, 700)
    stripe_double.pay(answer["provider_reference"])
    succeeded = last_event(stripe_double, "payment_intent.succeeded")
    assert webhook(succeeded, succeeded) == ["credited", "duplicate"]
    assert (balance(card_wallet), credits_of(answer["id"])) == ((700, 0, 0), 1)
    assert PaymentEvent.objects.filter(event_id=succeeded["id"]).count() == 1


def test_events_out_of_order_end_where_the_money_is(api, card_wallet, stripe_double, webhook):
    """Stripe does not promise order: a refusal or a cancellation told after the success
    changes nothing, and a success told after a cancellation still credits."""
    first = top_up(api, card_wallet, 400)
    stripe_double.pay(first["provider_reference"], payment_method="pm_card_chargeDeclined")
    declined = last_event(stripe_double, "payment_intent.payment_failed")
    stripe_double.pay(first["provider_reference"])
    succeeded = last_event(stripe_double, "payment_intent.succeeded")
    assert webhook(succeeded, declined) == ["credited", "attempt_failed"]
    assert TopUp.objects.get(pk=first["id"]).status == "succeeded"

    second = top_up(api, card_wallet, 300)
    stripe_double.pay(second["provider_reference"])
    paid = last_event(stripe_double, "payment_intent.succeeded")
    canceled = {**paid, "id": "evt_canceled_late", "type": "payment_intent.canceled"}
    canceled["data"] = {
        "object": {**paid["data"]["object"], "status": "canceled", "cancellation_reason": "abandoned"}
    }
    assert webhook(canceled, paid) == ["failed", "credited"]
    assert TopUp.objects.get(pk=second["id"]).status == "succeeded"
    assert balance(card_wallet) == (700, 0, 0)


# --- Signatures ---------------------------------------------------------------------------------


def test_a_bad_signature_is_400_invalid_signature_and_changes_nothing(api, card_wallet, stripe_double):
    answer = top_up(api, card_wallet, 500)
    stripe_double.pay(answer["provider_reference"])
    succeeded = last_event(stripe_double, "payment_intent.succeeded")
    tampered = dict(succeeded, data={"object": {**succeeded["data"]["object"], "amount_received": 50_000}})
    for response in (
        post_event(succeeded, secret="whsec_someone_else"),
        post_event(succeeded, body=__import__("json").dumps(tampered).encode()),
    ):
        assert_problem(response, 400, "invalid_signature")
    from django.test import Client

    unsigned = Client().post("/payments/stripe/webhook/", data=b"{}", content_type="application/json")
    assert_problem(unsigned, 400, "invalid_signature")
    assert (balance(card_wallet), PaymentEvent.objects.count()) == ((0, 0, 0), 0)


def test_a_signature_older_than_stripes_tolerance_is_refused(api, card_wallet, stripe_double, settings):
    answer = top_up(api, card_wallet, 500)
    stripe_double.pay(answer["provider_reference"])
    succeeded = last_event(stripe_double, "payment_intent.succeeded")
    stale = int(time.time()) - settings.IAAS_STRIPE_WEBHOOK_TOLERANCE - 5
    assert_problem(post_event(succeeded, timestamp=stale), 400, "invalid_signature")
    assert balance(card_wallet) == (0, 0, 0)
    recent = int(time.time()) - settings.IAAS_STRIPE_WEBHOOK_TOLERANCE + 30
    assert post_event(succeeded, timestamp=recent).status_code == 200
    assert balance(card_wallet) == (500, 0, 0)


def test_a_rolled_endpoint_secret_is_accepted_beside_the_new_one(api, card_wallet, stripe_double, settings):
    settings.IAAS_STRIPE_WEBHOOK_SECRETS = ["whsec_the_new_one", WEBHOOK_SECRET]
    answer = top_up(api, card_wallet, 500)
    stripe_double.pay(answer["provider_reference"])
    assert post_event(last_event(stripe_double, "payment_intent.succeeded")).status_code == 200
    assert balance(card_wallet) == (500, 0, 0)


# --- Crashes ------------------------------------------------------------------------------------


def test_a_create_whose_answer_was_lost_is_one_payment_when_the_customer_retries(
    api, card_wallet, stripe_double
):
    """Stripe made the PaymentIntent, the answer never came: the pending top-up is committed,
    the customer gets a 503, and the same request again (same Idempotency-Key) gets the same
    PaymentIntent, because its Stripe key is the top-up's."""
    stripe_double.drop_next_response("/v1/payment_intents")
    lost = api.post(
        f"/api/v1/wallets/{card_wallet.id}/top-ups/",
        {"amount": 900},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k-1",
    )
    assert_problem(lost, 503, "service_unavailable")
    assert lost["Retry-After"]
    [pending] = TopUp.objects.filter(wallet=card_wallet)
    assert (pending.status, pending.provider_reference) == ("pending", "")

    again = top_up(api, card_wallet, 900, HTTP_IDEMPOTENCY_KEY="k-1")
    [intent] = stripe_double.payment_intents.values()
    assert (again["id"], again["provider_reference"], again["client_secret"]) == (
        str(pending.id),
        intent["id"],
        intent["client_secret"],
    )
    assert again.get("client_secret")
    assert TopUp.objects.filter(wallet=card_wallet).count() == 1
    creates = [r for r in stripe_double.requests if r[0] == "POST" and r[1] == "/v1/payment_intents"]
    assert [r[3] for r in creates] == [f"iaas-top-up-{pending.id}"] * 2


def test_the_clients_own_retry_after_a_lost_answer_makes_one_payment(
    api, card_wallet, stripe_double, settings
):
    settings.IAAS_STRIPE_NETWORK_RETRIES = 1
    stripe_double.drop_next_response("/v1/payment_intents")
    answer = top_up(api, card_wallet, 900)
    assert len(stripe_double.payment_intents) == 1
    assert answer["provider_reference"] in stripe_double.payment_intents


def test_a_crash_between_stripes_success_and_the_credit_is_finished_by_the_next_delivery(
    api, card_wallet, stripe_double, webhook, monkeypatch
):
    """The process dies while it books the credit: nothing of the event is kept, the 5xx
    makes Stripe send it again, and the second delivery credits, once."""
    answer = top_up(api, card_wallet, 1_200)
    stripe_double.pay(answer["provider_reference"])
    succeeded = last_event(stripe_double, "payment_intent.succeeded")

    from iaas.billing import services

    real_confirm = services.top_up_confirm

    def dies_after_booking(**kwargs):
        real_confirm(**kwargs)
        raise SystemExit("killed")  # after the credit's statements, before the commit

    monkeypatch.setattr(services, "top_up_confirm", dies_after_booking)
    with pytest.raises(SystemExit):
        post_event(succeeded)
    monkeypatch.setattr(services, "top_up_confirm", real_confirm)
    assert (balance(card_wallet), PaymentEvent.objects.count()) == ((0, 0, 0), 0)

    assert webhook(succeeded) == ["credited"]
    assert (balance(card_wallet), credits_of(answer["id"])) == ((1_200, 0, 0), 1)


def test_a_success_whose_webhook_never_comes_is_credited_by_asking_again(
    api, card_wallet, stripe_double, webhook
):
    """The same POST again (same key) reads the PaymentIntent back: paid, so credited."""
    answer = top_up(api, card_wallet, 800, HTTP_IDEMPOTENCY_KEY="k-2")
    stripe_double.pay(answer["provider_reference"])
    again = top_up(api, card_wallet, 800, HTTP_IDEMPOTENCY_KEY="k-2")
    assert (again["id"], again["status"], again["client_secret"]) == (answer["id"], "succeeded", None)
    assert again["provider_reference"] == answer["provider_reference"]
    assert balance(card_wallet) == (800, 0, 0)
    assert webhook(last_event(stripe_double, "payment_intent.succeeded")) == ["credited"]  # applied: no-op
    assert credits_of(answer["id"]) == 1


# --- Successes for no top-up --------------------------------------------------------------------


def test_a_success_for_no_known_top_up_is_parked_and_the_operators_told(
    card_wallet, stripe_double, webhook, caplog
):
    import stripe as stripe_library

    from iaas.billing.payments.stripe_provider import client

    stranger = client().v1.payment_intents.create(
        params={"amount": 4_200, "currency": "eur", "metadata": {"top_up_id": "not-ours"}}
    )
    stripe_double.pay(stranger["id"])
    with caplog.at_level(logging.ERROR):
        assert webhook(last_event(stripe_double, "payment_intent.succeeded")) == ["parked"]
    parked = ParkedPayment.objects.get()
    assert (parked.payment_reference, parked.amount, parked.currency) == (stranger["id"], 4_200, "EUR")
    assert parked.resolved_at is None
    assert "No top-up" in parked.why
    assert any("parked" in record.getMessage() for record in caplog.records)
    assert balance(card_wallet) == (0, 0, 0)
    assert isinstance(stranger, stripe_library.PaymentIntent)


def test_a_success_for_another_amount_is_parked_not_credited(api, card_wallet, stripe_double, webhook):
    answer = top_up(api, card_wallet, 1_000)
    stripe_double.pay(answer["provider_reference"])
    succeeded = last_event(stripe_double, "payment_intent.succeeded")
    # Signed by Stripe's scheme with our secret: what a changed PaymentIntent would say.
    changed = {**succeeded, "data": {"object": {**succeeded["data"]["object"], "amount_received": 100}}}
    assert webhook(changed) == ["parked"]
    assert (balance(card_wallet), TopUp.objects.get(pk=answer["id"]).status) == ((0, 0, 0), "pending")


# --- Money going back: refunds and disputes ----------------------------------------------------


def spend(customer, wallet, plan: str = "web-pro") -> None:
    """A hosting purchase: its month is reserved at once (settled when events are delivered)."""
    response = client_for(customer).post(
        "/api/v1/hosting/subscriptions/",
        {"domain": f"shop-{time.monotonic_ns()}.example.com", "plan": plan, "wallet": str(wallet.id)},
        format="json",
    )
    assert response.status_code == 201, response.content


def paid_top_up(api, wallet, double, webhook, amount: int) -> dict:
    answer = top_up(api, wallet, amount)
    double.pay(answer["provider_reference"])
    assert webhook(last_event(double, "payment_intent.succeeded")) == ["credited"]
    return answer


def test_a_refund_larger_than_the_available_balance_leaves_debt_and_freezes_the_wallet(
    api, customer, card_wallet, stripe_double, webhook, catalog, assert_invariants, caplog
):
    paid = paid_top_up(api, card_wallet, stripe_double, webhook, 2_000)
    spend(customer, card_wallet)  # 19.99 held for the hosting month
    assert balance(card_wallet) == (2_000, 1_999, 0)

    stripe_double.refund(paid["provider_reference"])
    with caplog.at_level(logging.ERROR):
        assert webhook(last_event(stripe_double, "charge.refunded")) == ["reversed"]

    card_wallet.refresh_from_db()
    assert (card_wallet.balance, card_wallet.reserved, card_wallet.debt) == (1_999, 1_999, 1_999)
    assert card_wallet.status == Wallet.Status.FROZEN
    [reversal] = LedgerEntry.objects.filter(wallet=card_wallet, kind="reversal")
    assert reversal.amount == -1
    assert any("frozen" in record.getMessage() for record in caplog.records)
    shown = api.get(f"/api/v1/wallets/{card_wallet.id}/").json()
    assert (shown["status"], shown["debt"], shown["available"]) == ("frozen", 1_999, 0)
    entries = api.get(f"/api/v1/wallets/{card_wallet.id}/ledger/").json()["results"]
    assert entries[0]["kind"] == "reversal"
    assert entries[0]["amount"] == -1

    bus.deliver_pending()  # the month settles out of what was held
    assert balance(card_wallet) == (0, 0, 1_999)
    assert_invariants()


def test_a_later_top_up_pays_the_debt_first(
    api, customer, card_wallet, stripe_double, webhook, catalog, assert_invariants
):
    paid = paid_top_up(api, card_wallet, stripe_double, webhook, 2_000)
    spend(customer, card_wallet)
    stripe_double.refund(paid["provider_reference"])
    webhook(last_event(stripe_double, "charge.refunded"))
    bus.deliver_pending()
    assert balance(card_wallet) == (0, 0, 1_999)

    # A frozen wallet in debt takes a top-up: the debt is paid first, beside the whole credit.
    later = paid_top_up(api, card_wallet, stripe_double, webhook, 3_000)
    card_wallet.refresh_from_db()
    assert (card_wallet.balance, card_wallet.debt, card_wallet.status) == (1_001, 0, "frozen")
    entries = api.get(f"/api/v1/wallets/{card_wallet.id}/ledger/").json()["results"]
    assert [(e["kind"], e["amount"]) for e in entries[:2]] == [("reversal", -1_999), ("top_up", 3_000)]
    assert TopUp.objects.get(pk=later["id"]).debt_paid == 1_999
    assert_invariants()


def test_a_dispute_freezes_the_wallet_even_when_the_balance_covers_it(
    api, card_wallet, stripe_double, webhook, assert_invariants
):
    paid = paid_top_up(api, card_wallet, stripe_double, webhook, 5_000)
    stripe_double.dispute(paid["provider_reference"], amount=3_000)
    dispute = last_event(stripe_double, "charge.dispute.created")
    assert webhook(dispute, dispute) == ["reversed", "duplicate"]
    card_wallet.refresh_from_db()
    assert (card_wallet.balance, card_wallet.debt, card_wallet.status) == (2_000, 0, "frozen")
    assert_invariants()


def test_a_dispute_larger_than_the_available_balance_is_debt(
    api, customer, card_wallet, stripe_double, webhook, catalog, assert_invariants
):
    paid = paid_top_up(api, card_wallet, stripe_double, webhook, 2_500)
    spend(customer, card_wallet)  # 1,999 held, 501 available
    stripe_double.dispute(paid["provider_reference"])
    webhook(last_event(stripe_double, "charge.dispute.created"))
    card_wallet.refresh_from_db()
    assert (card_wallet.balance, card_wallet.reserved, card_wallet.debt) == (1_999, 1_999, 1_999)
    assert card_wallet.status == "frozen"
    assert_invariants()


def test_partial_refunds_told_out_of_order_take_each_cent_once(api, card_wallet, stripe_double, webhook):
    paid = paid_top_up(api, card_wallet, stripe_double, webhook, 5_000)
    stripe_double.refund(paid["provider_reference"], amount=1_000)
    first = last_event(stripe_double, "charge.refunded")
    stripe_double.refund(paid["provider_reference"], amount=2_000)
    second = last_event(stripe_double, "charge.refunded")
    assert second["data"]["object"]["amount_refunded"] == 3_000
    assert webhook(second, first, second) == ["reversed", "nothing_to_reverse", "duplicate"]
    card_wallet.refresh_from_db()
    assert (card_wallet.balance, card_wallet.debt, card_wallet.status) == (2_000, 0, "active")


def test_a_freeze_lost_to_a_crash_is_done_when_stripe_repeats_the_event(
    api, card_wallet, stripe_double, webhook, monkeypatch
):
    paid = paid_top_up(api, card_wallet, stripe_double, webhook, 1_000)
    stripe_double.dispute(paid["provider_reference"])
    dispute = last_event(stripe_double, "charge.dispute.created")

    from iaas.billing import reversals

    real_follow_up = reversals.reversal_follow_up

    def crash(**kwargs):
        raise SystemExit("killed after the reversal committed")

    monkeypatch.setattr(reversals, "reversal_follow_up", crash)
    with pytest.raises(SystemExit):
        post_event(dispute)
    monkeypatch.setattr(reversals, "reversal_follow_up", real_follow_up)
    card_wallet.refresh_from_db()
    assert (card_wallet.balance, card_wallet.status) == (0, "active")  # booked, not yet frozen

    assert webhook(dispute) == ["duplicate"]
    card_wallet.refresh_from_db()
    assert card_wallet.status == "frozen"


# --- Found in review: each failed before its fix --------------------------------------------------


def test_a_refund_told_before_its_success_credits_then_takes_back(api, card_wallet, stripe_double, webhook):
    """The success's delivery failed and is retried later; the refund arrives first. A
    refund proves the payment succeeded: the top-up is credited, then reversed, and the
    late success changes nothing."""
    answer = top_up(api, card_wallet, 2_000)
    stripe_double.pay(answer["provider_reference"])
    succeeded = last_event(stripe_double, "payment_intent.succeeded")
    stripe_double.refund(answer["provider_reference"])
    refunded = last_event(stripe_double, "charge.refunded")
    assert webhook(refunded, succeeded, refunded) == ["reversed", "credited", "duplicate"]
    assert balance(card_wallet) == (0, 0, 0)
    assert credits_of(answer["id"]) == 1
    assert LedgerEntry.objects.filter(wallet=card_wallet, kind="reversal").get().amount == -2_000


def test_a_dispute_told_before_its_success_credits_then_takes_back(
    api, card_wallet, stripe_double, webhook, assert_invariants
):
    answer = top_up(api, card_wallet, 2_000)
    stripe_double.pay(answer["provider_reference"])
    succeeded = last_event(stripe_double, "payment_intent.succeeded")
    stripe_double.dispute(answer["provider_reference"])
    assert webhook(last_event(stripe_double, "charge.dispute.created"), succeeded) == ["reversed", "credited"]
    card_wallet.refresh_from_db()
    assert (card_wallet.balance, card_wallet.debt, card_wallet.status) == (0, 0, "frozen")
    assert_invariants()


def test_a_top_up_below_stripes_minimum_is_400_and_nothing_is_opened(api, card_wallet, stripe_double):
    body = assert_problem(
        api.post(f"/api/v1/wallets/{card_wallet.id}/top-ups/", {"amount": 49}, format="json"),
        400,
        "validation_error",
    )
    assert "0.50" in body["errors"]["amount"][0]
    assert (TopUp.objects.filter(wallet=card_wallet).count(), stripe_double.payment_intents) == (0, {})
    assert top_up(api, card_wallet, 50)["status"] == "pending"


def test_a_request_stripe_refuses_is_a_503_not_a_500(api, card_wallet, stripe_double, settings, caplog):
    settings.IAAS_STRIPE_SECRET_KEY = "sk_test_not_what_the_double_knows"
    stripe_double.fail_next(1, status=400, path_prefix="/v1/payment_intents")
    with caplog.at_level(logging.ERROR):
        response = api.post(f"/api/v1/wallets/{card_wallet.id}/top-ups/", {"amount": 500}, format="json")
    assert_problem(response, 503, "service_unavailable")
    assert any("Stripe refused" in record.getMessage() for record in caplog.records)


def test_a_second_payment_for_a_credited_top_up_is_parked_not_absorbed(
    api, card_wallet, stripe_double, webhook
):
    answer = top_up(api, card_wallet, 2_000)
    stripe_double.pay(answer["provider_reference"])
    first = last_event(stripe_double, "payment_intent.succeeded")
    second = {**first, "id": "evt_second_payment"}
    second["data"] = {"object": {**first["data"]["object"], "id": "pi_second_payment_same_top_up"}}
    assert webhook(first, second) == ["credited", "parked"]
    assert ParkedPayment.objects.get().payment_reference == "pi_second_payment_same_top_up"
    assert balance(card_wallet) == (2_000, 0, 0)


def test_a_closed_dispute_tells_the_operators_and_moves_no_money(
    api, card_wallet, stripe_double, webhook, caplog
):
    paid = paid_top_up(api, card_wallet, stripe_double, webhook, 1_000)
    stripe_double.dispute(paid["provider_reference"])
    created = last_event(stripe_double, "charge.dispute.created")
    webhook(created)
    closed = {**created, "id": "evt_dispute_won", "type": "charge.dispute.closed"}
    closed["data"] = {"object": {**created["data"]["object"], "status": "won"}}
    with caplog.at_level(logging.ERROR):
        assert webhook(closed) == ["dispute_won"]
    assert any("closed: won" in record.getMessage() for record in caplog.records)
    card_wallet.refresh_from_db()
    assert (card_wallet.balance, card_wallet.status) == (0, "frozen")


def test_operators_neither_confirm_nor_fail_a_card_payment_by_hand(api, card_wallet, stripe_double):
    from iaas.billing import services
    from iaas.contracts.errors import InvalidState

    answer = top_up(api, card_wallet, 500)
    with pytest.raises(InvalidState):
        services.top_up_confirm_by_operator(top_up_id=answer["id"])
    with pytest.raises(InvalidState):
        services.top_up_fail_by_operator(top_up_id=answer["id"])
    assert TopUp.objects.get(pk=answer["id"]).status == "pending"
