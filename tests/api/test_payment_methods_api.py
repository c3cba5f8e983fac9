"""Saved payment methods and automatic top-ups over HTTP (API.md, "Additions to version 1"):
problem details, pagination, idempotent POST whose provider call follows the stored first
step, 404 for other customers' objects, money as JSON integers."""

from __future__ import annotations

import uuid

import pytest

from iaas.api.models import IdempotencyKey
from iaas.billing.models import PaymentMethod
from iaas.billing.payments import SetupOutcome, auto
from iaas.contracts.errors import PaymentProviderUnavailable
from tests.api.conftest import assert_problem, client_for
from tests.billing.payment_doubles import script_provider
from tests.factories import funded_wallet

pytestmark = pytest.mark.django_db

METHOD_FIELDS = {
    "id",
    "status",
    "provider",
    "brand",
    "last4",
    "exp_month",
    "exp_year",
    "failure_message",
    "created_at",
    "activated_at",
}
AUTO_TOP_UP_FIELDS = {
    "wallet",
    "threshold",
    "amount",
    "currency",
    "payment_method",
    "due",
    "next_attempt_at",
    "last_attempt_at",
    "consecutive_failures",
    "last_failure_code",
    "last_failure_message",
    "created_at",
    "updated_at",
}
METHODS = "/api/v1/payment-methods/"


def save_card(api, **headers) -> dict:
    response = api.post(METHODS, format="json", **headers)
    assert response.status_code == 201, response.content
    return response.json()


def auto_top_up_path(wallet) -> str:
    return f"/api/v1/wallets/{wallet.id}/auto-top-up/"


def put(api, wallet, **body):
    return api.put(auto_top_up_path(wallet), body, format="json")


# --- Payment methods -------------------------------------------------------------------------------


def test_saving_a_card_with_the_sandbox_answers_it_active(api):
    answer = save_card(api)
    assert set(answer) == METHOD_FIELDS | {"client_secret", "publishable_key"}
    assert (answer["status"], answer["provider"], answer["brand"], answer["last4"]) == (
        "active",
        "sandbox",
        "visa",
        "4242",
    )
    assert (answer["exp_month"], answer["exp_year"]) == (12, 2099)
    assert (answer["client_secret"], answer["publishable_key"]) == (None, None)
    shown = api.get(f"{METHODS}{answer['id']}/").json()
    assert set(shown) == METHOD_FIELDS  # the secret is the POST's alone
    assert shown["status"] == "active"


def test_a_setup_completed_in_the_browser_answers_its_client_secret_never_stored(api, settings):
    script = script_provider(settings)
    script.setups.append(SetupOutcome(setup_reference="seti_9", client_secret="seti_9_secret_xyz"))
    script.setups.append(SetupOutcome(setup_reference="seti_9", client_secret="seti_9_secret_xyz"))
    answer = save_card(api, HTTP_IDEMPOTENCY_KEY="card-1")
    assert (answer["status"], answer["client_secret"]) == ("pending", "seti_9_secret_xyz")
    [stored] = IdempotencyKey.objects.all()
    assert "secret" not in stored.response_body
    # The replay carries the same method on, and asks the provider again for its secret
    # (the provider's idempotency key is the method's: the same setup).
    again = api.post(METHODS, format="json", HTTP_IDEMPOTENCY_KEY="card-1")
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert (again.json()["id"], again.json()["client_secret"]) == (answer["id"], "seti_9_secret_xyz")
    assert PaymentMethod.objects.count() == 1


def test_the_same_key_saves_one_card(api):
    first = save_card(api, HTTP_IDEMPOTENCY_KEY="k")
    second = api.post(METHODS, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert second.json()["id"] == first["id"]
    assert second["Idempotent-Replayed"] == "true"
    assert PaymentMethod.objects.count() == 1


def test_an_unreachable_provider_is_a_503_and_the_same_key_carries_on(api, settings):
    script = script_provider(settings)
    script.setups.append(PaymentProviderUnavailable())
    response = api.post(METHODS, format="json", HTTP_IDEMPOTENCY_KEY="card-2")
    body = assert_problem(response, 503, "service_unavailable")
    assert "Idempotency-Key" in body["detail"]
    assert response["Retry-After"]
    [pending] = PaymentMethod.objects.all()
    assert pending.status == "pending"
    answer = save_card(api, HTTP_IDEMPOTENCY_KEY="card-2")
    assert (answer["id"], answer["status"]) == (str(pending.id), "active")
    assert PaymentMethod.objects.count() == 1


def test_the_manual_provider_keeps_no_cards(api, settings):
    settings.IAAS_PAYMENT_PROVIDER = "manual"
    assert_problem(api.post(METHODS, format="json"), 409, "payment_methods_unavailable")
    assert not PaymentMethod.objects.exists()


def test_a_customer_lists_their_own_methods_newest_first_without_removed_ones(api, other_api):
    first, second, third = save_card(api), save_card(api), save_card(api)
    save_card(other_api)
    assert api.delete(f"{METHODS}{second['id']}/").status_code == 204
    listed = api.get(METHODS).json()
    assert set(listed) >= {"next", "previous", "results"}
    assert [m["id"] for m in listed["results"]] == [third["id"], first["id"]]
    removed = api.get(METHODS, {"status": "removed"}).json()["results"]
    assert [(m["id"], m["status"]) for m in removed] == [(second["id"], "removed")]
    assert_problem(api.get(METHODS, {"status": "lost"}), 400, "validation_error")


def test_another_customers_method_is_not_found(api, other_api):
    theirs = save_card(other_api)
    for response in (
        api.get(f"{METHODS}{theirs['id']}/"),
        api.delete(f"{METHODS}{theirs['id']}/"),
        api.get(f"{METHODS}{uuid.uuid4()}/"),
        api.get(f"{METHODS}not-a-uuid/"),
    ):
        assert_problem(response, 404, "not_found")
    assert PaymentMethod.objects.get(pk=theirs["id"]).status == "active"


def test_removing_a_method_answers_204_every_time(api):
    card = save_card(api)
    assert api.delete(f"{METHODS}{card['id']}/").status_code == 204
    assert api.delete(f"{METHODS}{card['id']}/").status_code == 204
    assert api.get(f"{METHODS}{card['id']}/").json()["status"] == "removed"


def test_a_read_key_may_look_but_not_save_or_remove(customer):
    card = save_card(client_for(customer))
    reader = client_for(customer, scope="read")
    assert reader.get(METHODS).status_code == 200
    assert_problem(reader.post(METHODS, format="json"), 403, "permission_denied")
    assert_problem(reader.delete(f"{METHODS}{card['id']}/"), 403, "permission_denied")


# --- Automatic top-ups --------------------------------------------------------------------------------


def test_a_wallet_has_no_automatic_top_up_until_one_is_set(api, wallet):
    assert_problem(api.get(auto_top_up_path(wallet)), 404, "not_found")
    assert_problem(api.delete(auto_top_up_path(wallet)), 404, "not_found")


def test_setting_one_answers_it_with_its_state(api, wallet):
    card = save_card(api)
    response = put(api, wallet, threshold=2_000, amount=5_000, payment_method=card["id"])
    assert response.status_code == 200, response.content
    shown = response.json()
    assert set(shown) == AUTO_TOP_UP_FIELDS
    assert (shown["wallet"], shown["threshold"], shown["amount"], shown["currency"]) == (
        str(wallet.id),
        2_000,
        5_000,
        "EUR",
    )
    assert (shown["payment_method"], shown["due"], shown["next_attempt_at"]) == (card["id"], False, None)
    assert (shown["consecutive_failures"], shown["last_failure_code"], shown["last_attempt_at"]) == (
        0,
        "",
        None,
    )
    assert api.get(auto_top_up_path(wallet)).json() == shown
    # Changed with another PUT.
    changed = put(api, wallet, threshold=3_000, amount=6_000, payment_method=card["id"]).json()
    assert (changed["threshold"], changed["amount"]) == (3_000, 6_000)


def test_a_wallet_below_the_threshold_is_topped_up_at_once(api, wallet):
    card = save_card(api)
    shown = put(api, wallet, threshold=20_000, amount=15_000, payment_method=card["id"]).json()
    assert shown["due"] is True
    assert shown["next_attempt_at"] is not None
    auto.auto_top_ups_run()
    after = api.get(auto_top_up_path(wallet)).json()
    assert (after["due"], after["consecutive_failures"], after["last_attempt_at"] is not None) == (
        False,
        0,
        True,
    )
    assert api.get(f"/api/v1/wallets/{wallet.id}/").json()["available"] == 25_000
    [top_up] = api.get(f"/api/v1/wallets/{wallet.id}/top-ups/", {"status": "succeeded"}).json()["results"][:1]
    assert (top_up["origin"], top_up["payment_method"], top_up["amount"]) == ("auto", card["id"], 15_000)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"threshold": "10", "amount": 100}, "threshold"),
        ({"threshold": 10.0, "amount": 100}, "threshold"),
        ({"threshold": 0, "amount": 100}, "threshold"),
        ({"threshold": 10, "amount": 100_000_001}, "amount"),
        ({"threshold": 10, "amount": True}, "amount"),
        ({"threshold": 10}, "amount"),
        ({"threshold": 10, "amount": 100, "payment_method": "not-a-uuid"}, "payment_method"),
        ({"threshold": 10, "amount": 100, "payment_method": 7}, "payment_method"),
    ],
)
def test_a_bad_setting_is_a_400_naming_the_field(api, wallet, body, field):
    card = save_card(api)
    body = {"payment_method": card["id"], **body}
    problem = assert_problem(api.put(auto_top_up_path(wallet), body, format="json"), 400, "validation_error")
    assert field in problem["errors"]
    assert_problem(api.get(auto_top_up_path(wallet)), 404, "not_found")


def test_a_card_that_is_not_active_is_a_400_saying_why(api, wallet):
    card = save_card(api)
    PaymentMethod.objects.filter(pk=card["id"]).update(status="pending")
    problem = assert_problem(
        put(api, wallet, threshold=10, amount=100, payment_method=card["id"]), 400, "validation_error"
    )
    assert "pending" in problem["errors"]["payment_method"][0]


def test_another_customers_wallet_or_card_is_not_found(api, other_api, wallet, other_customer):
    mine = save_card(api)
    theirs = save_card(other_api)
    their_wallet = funded_wallet(other_customer)
    assert_problem(put(api, wallet, threshold=10, amount=100, payment_method=theirs["id"]), 404, "not_found")
    assert_problem(
        put(api, wallet, threshold=10, amount=100, payment_method=str(uuid.uuid4())), 404, "not_found"
    )
    assert_problem(
        put(api, their_wallet, threshold=10, amount=100, payment_method=mine["id"]), 404, "not_found"
    )
    put(other_api, their_wallet, threshold=10, amount=100, payment_method=theirs["id"])
    assert_problem(api.get(auto_top_up_path(their_wallet)), 404, "not_found")
    assert_problem(api.delete(auto_top_up_path(their_wallet)), 404, "not_found")
    assert other_api.get(auto_top_up_path(their_wallet)).status_code == 200


def test_deleting_it_stops_the_automatic_top_ups(api, wallet):
    card = save_card(api)
    put(api, wallet, threshold=10, amount=100, payment_method=card["id"])
    assert api.delete(auto_top_up_path(wallet)).status_code == 204
    assert_problem(api.get(auto_top_up_path(wallet)), 404, "not_found")


def test_removing_the_card_ends_the_automatic_top_up(api, wallet):
    card = save_card(api)
    put(api, wallet, threshold=10, amount=100, payment_method=card["id"])
    api.delete(f"{METHODS}{card['id']}/")
    assert_problem(api.get(auto_top_up_path(wallet)), 404, "not_found")
