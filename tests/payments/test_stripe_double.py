"""The Stripe double, through the real `stripe` client: the flows the app walks, Stripe's
idempotency semantics (the app's crash safety leans on them), the faults tests inject, the
webhook signature, and conformance: every object the double answers or puts in an event is
checked against the stripe library's own description of it. The library's resource classes are
generated from Stripe's published OpenAPI spec for its API version, so a field the double makes
up, or a status Stripe does not have, fails here instead of passing silently in the app's tests."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import json
import sys
import threading
import time
import types
import typing
import urllib.error
import urllib.request

import pytest
import stripe
from stripe._list_object import ListObject
from stripe._stripe_object import StripeObject, UntypedStripeObject

from tests.payments.stripe_double import StripeDouble, StripeFailure, event_body, parse_params, sign_payload

PAYMENT = {"amount": 2500, "currency": "eur", "description": "Wallet top-up 42"}
PAYMENT |= {"metadata": {"top_up_id": "42", "wallet_id": "7"}}
TOP_UP = PAYMENT | {"automatic_payment_methods": {"enabled": True}}  # the browser pays it
CARD_TOP_UP = PAYMENT | {"payment_method_types": ["card"]}
OFF_SESSION = CARD_TOP_UP | {"off_session": True, "confirm": True}


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch):
    """The client sleeps at least 0.5 s before a retry; the double needs no such patience."""
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.01)


@pytest.fixture
def double():
    with StripeDouble() as running:
        yield running


def client_of(double: StripeDouble, retries: int = 2, api_key: str = "sk_test_double") -> stripe.StripeClient:
    return stripe.StripeClient(api_key, base_addresses={"api": double.url}, max_network_retries=retries)


@pytest.fixture
def client(double):
    return client_of(double)


@pytest.fixture
def customer(client):
    return client.v1.customers.create(params={"email": "ada@example.com", "metadata": {"owner_id": "1"}})


@pytest.fixture
def saved_card(double, client, customer):
    """A card saved off-session through a SetupIntent, as the app saves one."""
    intent = client.v1.setup_intents.create(
        params={"customer": customer.id, "usage": "off_session", "payment_method_types": ["card"]}
    )
    return double.confirm_setup(intent.id)["payment_method"]


def raw_request(double: StripeDouble, path: str, headers: dict) -> tuple[int, dict]:
    request = urllib.request.Request(double.url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as refused:
        return refused.code, json.load(refused)


# -- requests ----------------------------------------------------------------------------------


def test_bracket_notation_is_read_as_stripe_encodes_it():
    encoded = (
        "amount=100&metadata[top_up_id]=7&metadata[0]=kept&automatic_payment_methods[enabled]=true"
        "&payment_method_types[0]=card&expand[]=latest_charge&expand[]=customer"
    )

    assert parse_params(encoded) == {
        "amount": "100",
        "metadata": {"top_up_id": "7", "0": "kept"},
        "automatic_payment_methods": {"enabled": "true"},
        "payment_method_types": ["card"],
        "expand": ["latest_charge", "customer"],
    }


def test_without_a_test_key_the_answer_is_401_in_stripes_shape(double):
    status, body = raw_request(double, "/v1/customers/cus_x", {})
    assert status == 401
    assert body["error"]["type"] == "invalid_request_error"
    assert "API key" in body["error"]["message"]

    with pytest.raises(stripe.AuthenticationError):
        client_of(double, api_key="sk_live_nope").v1.customers.retrieve("cus_x")


def test_an_unknown_parameter_is_refused_as_stripe_refuses_it(client):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.payment_intents.create(params={**TOP_UP, "amont": 5})

    assert refused.value.param == "amont"
    assert refused.value.code == "parameter_unknown"


def test_an_amount_below_stripes_minimum_is_refused(client):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.payment_intents.create(params={**TOP_UP, "amount": 10})

    assert refused.value.code == "amount_too_small"


def test_a_missing_object_is_404_resource_missing(client):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.payment_intents.retrieve("pi_missing")

    assert refused.value.http_status == 404
    assert refused.value.code == "resource_missing"


# -- customers and payments --------------------------------------------------------------------


def test_a_customer_is_created_and_retrieved(double, client):
    double.now = 1_800_000_000
    created = client.v1.customers.create(params={"email": "ada@example.com", "metadata": {"owner_id": "9"}})

    found = client.v1.customers.retrieve(created.id)
    assert found.id.startswith("cus_")
    assert (found.email, found.metadata["owner_id"], found.created) == ("ada@example.com", "9", 1_800_000_000)


def test_a_payment_intent_awaits_the_browser_then_succeeds_with_a_charge(double, client):
    intent = client.v1.payment_intents.create(params=TOP_UP)
    assert intent.status == "requires_payment_method"
    assert intent.id.startswith("pi_")
    assert intent.client_secret.startswith(f"{intent.id}_secret_")
    assert intent.currency == "eur"

    double.pay(intent.id)

    paid = client.v1.payment_intents.retrieve(intent.id, params={"expand": ["latest_charge"]})
    assert (paid.status, paid.amount_received) == ("succeeded", 2500)
    charge = paid.latest_charge
    assert charge.id.startswith("ch_")
    assert (charge.amount, charge.amount_refunded, charge.refunded, charge.disputed) == (
        2500,
        0,
        False,
        False,
    )
    assert (charge.payment_intent, charge.status, charge.currency) == (intent.id, "succeeded", "eur")
    assert charge.metadata.to_dict() == {"top_up_id": "42", "wallet_id": "7"}
    assert charge.balance_transaction.startswith("txn_")
    assert [e["type"] for e in double.events[-4:]] == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
        "charge.updated",  # the asynchronous capture settled
    ]


def test_the_browser_is_refused_then_pays_with_another_card(double, client):
    intent = client.v1.payment_intents.create(params=TOP_UP)

    refused = double.pay(intent.id, "pm_card_chargeDeclined")
    assert refused["status"] == "requires_payment_method"
    assert (refused["last_payment_error"]["code"], refused["last_payment_error"]["decline_code"]) == (
        "card_declined",
        "generic_decline",
    )
    assert double.events_of("payment_intent.payment_failed")[0]["data"]["object"]["id"] == intent.id

    assert double.pay(intent.id, "pm_card_mastercard")["status"] == "succeeded"


def test_a_server_side_confirmation_that_might_redirect_needs_a_return_url(client):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.payment_intents.create(params={**TOP_UP, "payment_method": "pm_card_visa", "confirm": True})
    assert refused.value.param == "return_url"

    no_redirects = {**TOP_UP, "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"}}
    paid = client.v1.payment_intents.create(
        params={**no_redirects, "payment_method": "pm_card_visa", "confirm": True}
    )
    assert paid.status == "succeeded"


def test_a_payment_method_given_at_creation_awaits_confirmation(double, client):
    intent = client.v1.payment_intents.create(params={**CARD_TOP_UP, "payment_method": "pm_card_visa"})
    assert intent.status == "requires_confirmation"
    assert intent.payment_method.startswith("pm_")
    assert intent.payment_method != "pm_card_visa"

    assert client.v1.payment_intents.confirm(intent.id).status == "succeeded"

    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.payment_intents.confirm(intent.id)
    assert again.value.code == "payment_intent_unexpected_state"


def test_off_session_with_a_saved_card_succeeds(client, customer, saved_card):
    intent = client.v1.payment_intents.create(
        params={**OFF_SESSION, "customer": customer.id, "payment_method": saved_card}
    )

    assert intent.status == "succeeded"
    assert intent.payment_method == saved_card


@pytest.mark.parametrize(
    ("card", "decline_code"),
    [
        ("pm_card_chargeCustomerFail", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
def test_an_off_session_refusal_is_a_402_card_error_carrying_the_payment_intent(
    double, client, card, decline_code
):
    with pytest.raises(stripe.CardError) as refused:
        client.v1.payment_intents.create(params={**OFF_SESSION, "payment_method": card})

    error = refused.value.error
    assert (refused.value.http_status, refused.value.code, error.decline_code) == (
        402,
        "card_declined",
        decline_code,
    )
    assert error.payment_intent.status == "requires_payment_method"
    assert error.payment_intent.last_payment_error.code == "card_declined"
    assert error.payment_intent.payment_method is None
    stored = double.payment_intents[error.payment_intent.id]
    assert stored["status"] == "requires_payment_method"
    assert double.get(stored["latest_charge"])["status"] == "failed"
    assert [e["type"] for e in double.events[-2:]] == ["charge.failed", "payment_intent.payment_failed"]


def test_off_session_a_card_that_needs_authentication_is_refused_awaiting_a_payment_method(double, client):
    with pytest.raises(stripe.CardError) as refused:
        client.v1.payment_intents.create(
            params={**OFF_SESSION, "payment_method": "pm_card_authenticationRequired"}
        )

    assert refused.value.code == "authentication_required"
    intent = refused.value.error.payment_intent
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error.code == "authentication_required"
    assert double.events_of("payment_intent.payment_failed")


def test_on_session_a_card_that_needs_authentication_requires_action_until_the_customer_authenticates(
    double, client
):
    params = CARD_TOP_UP | {"confirm": True}

    intent = client.v1.payment_intents.create(
        params={**params, "payment_method": "pm_card_authenticationRequired"}
    )
    assert intent.status == "requires_action"
    assert intent.next_action.type == "use_stripe_sdk"

    assert double.authenticate(intent.id)["status"] == "succeeded"
    failed = client.v1.payment_intents.create(
        params={**params, "payment_method": "pm_card_authenticationRequired"}
    )
    after = double.authenticate(failed.id, succeed=False)
    assert after["status"] == "requires_payment_method"
    assert after["last_payment_error"]["code"] == "payment_intent_authentication_failure"


def test_a_payment_intent_is_canceled_once(double, client):
    intent = client.v1.payment_intents.create(params=TOP_UP)

    canceled = client.v1.payment_intents.cancel(intent.id, params={"cancellation_reason": "abandoned"})
    assert (canceled.status, canceled.cancellation_reason) == ("canceled", "abandoned")
    assert canceled.canceled_at is not None
    assert double.events_of("payment_intent.canceled")[0]["data"]["object"]["id"] == intent.id

    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.payment_intents.cancel(intent.id)
    assert again.value.code == "payment_intent_unexpected_state"
    with pytest.raises(StripeFailure):
        double.cancel(intent.id)


def test_a_succeeded_payment_cannot_be_canceled(double, client):
    intent = client.v1.payment_intents.create(params=TOP_UP)
    double.pay(intent.id)

    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.cancel(intent.id)


# -- setup intents and payment methods ---------------------------------------------------------


def test_a_setup_intent_saves_the_card_on_the_customer(double, client, customer):
    intent = client.v1.setup_intents.create(
        params={"customer": customer.id, "usage": "off_session", "payment_method_types": ["card"]}
    )
    assert (intent.status, intent.usage) == ("requires_payment_method", "off_session")
    assert intent.id.startswith("seti_")

    saved = double.confirm_setup(intent.id, "pm_card_mastercard")

    assert saved["status"] == "succeeded"
    method = client.v1.payment_methods.retrieve(saved["payment_method"])
    assert (method.customer, method.type, method.card.brand, method.card.last4) == (
        customer.id,
        "card",
        "mastercard",
        "4444",
    )
    assert [e["type"] for e in double.events[-2:]] == ["payment_method.attached", "setup_intent.succeeded"]


def test_a_declined_card_fails_the_setup_and_a_setup_intent_can_be_canceled(double, client, customer):
    intent = client.v1.setup_intents.create(
        params={"customer": customer.id, "payment_method_types": ["card"]}
    )

    with pytest.raises(stripe.CardError) as refused:
        client.v1.setup_intents.confirm(intent.id, params={"payment_method": "pm_card_chargeDeclined"})
    assert refused.value.error.setup_intent.status == "requires_payment_method"
    assert refused.value.error.setup_intent.last_setup_error.code == "card_declined"
    assert double.events_of("setup_intent.setup_failed")

    canceled = client.v1.setup_intents.cancel(intent.id)
    assert canceled.status == "canceled"
    assert double.events_of("setup_intent.canceled")[0]["data"]["object"]["status"] == "canceled"


def test_payment_methods_are_attached_listed_and_detached(double, client, customer):
    assert client.v1.payment_methods.retrieve("pm_card_visa").card.last4 == "4242"

    attached = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    assert attached.id != "pm_card_visa"  # Stripe makes a new PaymentMethod from the test shortcut
    assert attached.customer == customer.id

    listed = client.v1.payment_methods.list(params={"customer": customer.id, "type": "card"})
    assert [m.id for m in listed.data] == [attached.id]
    assert [m.id for m in client.v1.customers.payment_methods.list(customer.id).data] == [attached.id]

    assert client.v1.payment_methods.detach(attached.id).customer is None
    assert client.v1.customers.payment_methods.list(customer.id).data == []
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.create(params={**TOP_UP, "payment_method": attached.id})
    with pytest.raises(stripe.CardError):
        client.v1.payment_methods.attach("pm_card_chargeDeclined", params={"customer": customer.id})


# -- refunds and disputes ----------------------------------------------------------------------


def test_refunds_add_up_on_the_charge_until_it_is_refunded(double, client):
    intent = client.v1.payment_intents.create(params=TOP_UP)
    double.pay(intent.id)

    first = double.refund(intent.id, 1000)
    assert first["id"].startswith("re_")
    second = client.v1.refunds.create(params={"payment_intent": intent.id})

    assert second.amount == 1500
    refunded = [e["data"]["object"] for e in double.events_of("charge.refunded")]
    assert [(c["amount_refunded"], c["refunded"]) for c in refunded] == [(1000, False), (2500, True)]
    assert [e["data"]["object"]["amount"] for e in double.events_of("refund.created")] == [1000, 1500]
    with pytest.raises(StripeFailure):
        double.refund(intent.id)


def test_a_dispute_marks_the_charge_disputed(double, client):
    intent = client.v1.payment_intents.create(params=TOP_UP)
    charge = double.pay(intent.id)["latest_charge"]

    dispute = double.dispute(intent.id, reason="fraudulent")

    assert dispute["id"].startswith("dp_")
    assert (dispute["status"], dispute["charge"], dispute["payment_intent"]) == (
        "needs_response",
        charge,
        intent.id,
    )
    assert (dispute["amount"], dispute["currency"]) == (2500, "eur")
    assert double.get(charge)["disputed"] is True
    assert double.events_of("charge.dispute.created")[0]["data"]["object"]["id"] == dispute["id"]


# -- events ------------------------------------------------------------------------------------


def test_events_carry_a_snapshot_and_the_request_that_caused_them(double, client):
    intent = client.v1.payment_intents.create(params=TOP_UP, options={"idempotency_key": "top-up-42"})
    double.pay(intent.id)

    created = double.events_of("payment_intent.created")[0]
    assert created["data"]["object"]["status"] == "requires_payment_method"  # not the object as it is now
    assert created["api_version"] == stripe.api_version
    assert created["request"]["id"].startswith("req_")
    assert created["request"]["idempotency_key"] == "top-up-42"
    assert created["id"].startswith("evt_")
    assert (created["livemode"], created["pending_webhooks"]) == (False, 1)


def test_the_signature_is_the_one_stripes_library_verifies(double, client):
    intent = client.v1.payment_intents.create(params=TOP_UP)
    double.pay(intent.id)
    event = double.events_of("payment_intent.succeeded")[0]
    payload = event_body(event)

    verified = stripe.Webhook.construct_event(payload, sign_payload(payload, "whsec_right"), "whsec_right")

    assert verified.id == event["id"]
    assert verified.data.object.id == intent.id
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, sign_payload(payload, "whsec_wrong"), "whsec_right")
    stale = sign_payload(payload, "whsec_right", timestamp=int(time.time()) - 600)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, stale, "whsec_right")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload + b" ", sign_payload(payload, "whsec_right"), "whsec_right")


# -- idempotency -------------------------------------------------------------------------------


def test_the_same_key_with_the_same_parameters_makes_one_payment_intent(double, client):
    first = client.v1.payment_intents.create(params=TOP_UP, options={"idempotency_key": "top-up-42"})
    again = client.v1.payment_intents.create(params=TOP_UP, options={"idempotency_key": "top-up-42"})

    assert again.id == first.id
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert list(double.payment_intents) == [first.id]
    assert len(double.events_of("payment_intent.created")) == 1


def test_the_same_key_with_other_parameters_is_an_idempotency_error(double, client):
    client.v1.payment_intents.create(params=TOP_UP, options={"idempotency_key": "top-up-42"})

    with pytest.raises(stripe.IdempotencyError):
        client.v1.payment_intents.create(
            params={**TOP_UP, "amount": 9900}, options={"idempotency_key": "top-up-42"}
        )
    assert len(double.payment_intents) == 1


def test_keys_belong_to_one_api_key_and_expire_after_a_day(double, client):
    client.v1.payment_intents.create(params=TOP_UP, options={"idempotency_key": "top-up-42"})
    client_of(double, api_key="sk_test_other").v1.payment_intents.create(
        params=TOP_UP, options={"idempotency_key": "top-up-42"}
    )
    assert len(double.payment_intents) == 2

    double.advance(24 * 60 * 60)
    client.v1.payment_intents.create(params=TOP_UP, options={"idempotency_key": "top-up-42"})
    assert len(double.payment_intents) == 3


def test_a_refusal_before_acting_leaves_the_key_free_and_a_card_refusal_is_replayed(double, client):
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.create(params={**TOP_UP, "amount": 1}, options={"idempotency_key": "k"})
    assert client.v1.payment_intents.create(params=TOP_UP, options={"idempotency_key": "k"}).amount == 2500

    declined = OFF_SESSION | {"payment_method": "pm_card_chargeCustomerFail"}
    for _ in range(2):
        with pytest.raises(stripe.CardError) as refused:
            client.v1.payment_intents.create(params=declined, options={"idempotency_key": "declined"})
    assert refused.value.headers["Idempotent-Replayed"] == "true"
    assert len(double.events_of("charge.failed")) == 1


def test_a_key_still_in_use_answers_409(double, client):
    hold = double.hold_next("/v1/payment_intents")
    first: dict = {}

    def create() -> None:
        first["intent"] = client.v1.payment_intents.create(
            params=TOP_UP, options={"idempotency_key": "top-up-42"}
        )

    worker = threading.Thread(target=create)
    worker.start()
    try:
        assert hold.reached.wait(5)
        with pytest.raises(stripe.APIError) as conflict:
            client_of(double, retries=0).v1.payment_intents.create(
                params=TOP_UP, options={"idempotency_key": "top-up-42"}
            )
    finally:
        hold.release()
        worker.join(5)

    assert conflict.value.http_status == 409
    assert conflict.value.error.type == "idempotency_error"
    assert list(double.payment_intents) == [first["intent"].id]


def test_a_lost_answer_then_the_clients_own_retry_makes_one_payment_intent(double, client):
    double.drop_next_response("/v1/payment_intents")

    intent = client.v1.payment_intents.create(params=TOP_UP, options={"idempotency_key": "top-up-42"})

    assert list(double.payment_intents) == [intent.id]
    posts = [r for r in double.requests if r[0] == "POST"]
    assert [r[3] for r in posts] == ["top-up-42", "top-up-42"]


def test_a_lost_answer_without_retries_is_a_connection_error_though_stripe_acted(double):
    double.drop_next_response("/v1/payment_intents")

    with pytest.raises(stripe.APIConnectionError):
        client_of(double, retries=0).v1.payment_intents.create(
            params=TOP_UP, options={"idempotency_key": "k"}
        )

    assert len(double.payment_intents) == 1
    again = client_of(double).v1.payment_intents.create(params=TOP_UP, options={"idempotency_key": "k"})
    assert list(double.payment_intents) == [again.id]


def test_injected_failures_act_on_nothing_and_the_client_retries_them(double, client):
    double.fail_next(2)
    intent = client.v1.payment_intents.create(params=TOP_UP)
    assert list(double.payment_intents) == [intent.id]

    double.fail_next(1, status=503)
    with pytest.raises(stripe.APIError):
        client_of(double, retries=0).v1.payment_intents.create(params=TOP_UP)
    assert len(double.payment_intents) == 1


def test_concurrent_requests_each_act_once(double):
    """Each key sent twice at once: one acts, the other is replayed (or meets a 409, which the
    client retries until the first is done)."""
    patient = client_of(double, retries=8)
    answers: dict[str, set] = {f"top-up-{n}": set() for n in range(12)}

    def create(key: str) -> None:
        intent = patient.v1.payment_intents.create(params=TOP_UP, options={"idempotency_key": key})
        answers[key].add(intent.id)

    workers = [threading.Thread(target=create, args=(key,)) for key in [*answers, *answers]]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)

    assert all(len(ids) == 1 for ids in answers.values()), answers
    assert set(double.payment_intents) == set().union(*answers.values())


# -- conformance with the stripe library's generated description of each object ----------------

RESOURCES = {
    "payment_intent": stripe.PaymentIntent,
    "setup_intent": stripe.SetupIntent,
    "customer": stripe.Customer,
    "payment_method": stripe.PaymentMethod,
    "charge": stripe.Charge,
    "refund": stripe.Refund,
    "dispute": stripe.Dispute,
    "event": stripe.Event,
}
# Stripe's error object (`api_errors` in its spec) is what last_payment_error is too.
ERROR = stripe.PaymentIntent.LastPaymentError
# What the app reads: the double must always answer these.
RELIED_ON = {
    "payment_intent": "id object amount currency status metadata client_secret latest_charge customer "
    "payment_method",
    "setup_intent": "id object status metadata client_secret customer payment_method",
    "customer": "id object metadata email",
    "payment_method": "id object type card customer",
    "charge": "id object amount amount_refunded refunded disputed currency status metadata payment_intent "
    "customer",
    "refund": "id object amount currency status charge payment_intent",
    "dispute": "id object amount currency status charge payment_intent reason",
    "event": "id object type created api_version data request",
}
RELIED_ON_CARD = ("brand", "last4", "exp_month", "exp_year")


class _TypeCheckingNames(dict):
    """The names a stripe module imports only for type checkers, imported when a forward
    reference asks for them, so that typing.get_type_hints can resolve every annotation."""

    def __init__(self, module: types.ModuleType):
        super().__init__()
        self._imports = {}
        for node in ast.parse(inspect.getsource(module)).body:
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                for imported in (n for n in node.body if isinstance(n, ast.ImportFrom)):
                    for alias in imported.names:
                        self._imports[alias.asname or alias.name] = (imported.module, alias.name)

    def __missing__(self, name: str):
        if name not in self._imports:
            raise KeyError(name)
        module, attribute = self._imports[name]
        self[name] = getattr(importlib.import_module(module), attribute)
        return self[name]


@functools.cache
def declared_fields(cls: type) -> dict[str, object]:
    hints = typing.get_type_hints(cls, localns=_TypeCheckingNames(sys.modules[cls.__module__]))
    return {
        name: hint
        for name, hint in hints.items()
        if not name.startswith("_") and typing.get_origin(hint) is not typing.ClassVar
    }


def mismatches(value, annotation, path: str) -> list[str]:
    """How `value` departs from the library's `annotation` for it (empty: it conforms)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any or isinstance(annotation, typing.TypeVar):
        return []
    if origin in (typing.Union, types.UnionType):
        return _union_mismatches(value, args, path)
    if value is None:
        return [f"{path}: null, which {annotation} does not allow"]
    if origin is typing.Literal:
        shown = ", ".join(map(repr, args[:8])) + (", ..." if len(args) > 8 else "")
        return [] if value in args else [f"{path}: {value!r} is none of the {len(args)} allowed ({shown})"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: {value!r} is no list"]
        return [m for i, item in enumerate(value) for m in mismatches(item, args[0], f"{path}[{i}]")]
    if origin in (dict, UntypedStripeObject) or annotation is dict:
        if not isinstance(value, dict):
            return [f"{path}: {value!r} is no object"]
        item_type = args[-1] if args else typing.Any
        return [m for k, item in value.items() for m in mismatches(item, item_type, f"{path}.{k}")]
    if origin is ListObject:
        return _list_mismatches(value, args[0], path)
    if isinstance(annotation, type) and issubclass(annotation, StripeObject):
        return _object_mismatches(value, annotation, path)
    expected = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(annotation)
    if expected is None:
        return [f"{path}: cannot check {annotation}"]
    if not isinstance(value, expected) or (annotation is not bool and isinstance(value, bool)):
        return [f"{path}: {value!r} is not {annotation.__name__}"]
    return []


def _union_mismatches(value, members: tuple, path: str) -> list[str]:
    if value is None:
        return [] if type(None) in members else [f"{path}: null, which is not allowed"]
    members = tuple(m for m in members if m is not type(None))
    if any(typing.get_origin(m) is typing.Literal for m in members):
        # The library adds `str` beside an enum's values for those Stripe adds later; the double
        # emits only values it knows, so it gets no such leeway.
        members = tuple(m for m in members if m is not str)
    found = [mismatches(value, member, path) for member in members]
    return [] if not all(found) else min(found, key=len)


def _object_mismatches(value, cls: type, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: {value!r} is no {cls.__qualname__}"]
    declared = declared_fields(cls)
    found = []
    for name, item in value.items():
        if name not in declared:
            found.append(f"{path}.{name}: not declared by stripe.{cls.__qualname__}")
        else:
            found += mismatches(item, declared[name], f"{path}.{name}")
    return found


def _list_mismatches(value, item_type, path: str) -> list[str]:
    if not isinstance(value, dict) or value.get("object") != "list":
        return [f"{path}: {value!r} is no list object"]
    found = [f"{path}.{name}: not a list object's field" for name in value if name not in LIST_FIELDS]
    found += mismatches(value.get("has_more"), bool, f"{path}.has_more")
    found += mismatches(value.get("url"), str, f"{path}.url")
    return found + mismatches(value.get("data"), typing.List[item_type], f"{path}.data")  # noqa: UP006


LIST_FIELDS = ("object", "data", "has_more", "url")


def object_mismatches(obj: dict, path: str = "") -> list[str]:
    """An answer or an event's object, checked against the library's class for its kind, with
    the fields the app relies on."""
    path = path or obj.get("object", "answer")
    if "error" in obj:
        return mismatches(obj["error"], ERROR, f"{path}.error")
    if obj.get("object") == "list":
        return _list_mismatches(obj, typing.Any, path) + [
            m for i, item in enumerate(obj["data"]) for m in object_mismatches(item, f"{path}.data[{i}]")
        ]
    if obj.get("object") not in RESOURCES:
        return [f"{path}: no resource of kind {obj.get('object')!r}"]
    found = mismatches(obj, RESOURCES[obj["object"]], path)
    found += [f"{path}.{name}: missing" for name in RELIED_ON[obj["object"]].split() if name not in obj]
    if obj["object"] == "payment_method":
        found += [
            f"{path}.card.{name}: missing" for name in RELIED_ON_CARD if name not in obj.get("card", {})
        ]
    if obj["object"] == "event":
        found += object_mismatches(obj["data"]["object"], f"{path}.data.object")
    return found


def walk_every_flow(double: StripeDouble, client: stripe.StripeClient) -> None:
    """Every path the double has, so that every shape it can answer is looked at."""
    customer = client.v1.customers.create(params={"email": "ada@example.com", "name": "Ada"})
    client.v1.customers.retrieve(customer.id)
    paid = client.v1.payment_intents.create(params=TOP_UP)
    double.pay(paid.id)
    client.v1.payment_intents.retrieve(paid.id, params={"expand": ["latest_charge", "payment_method"]})
    double.refund(paid.id, 500)
    client.v1.refunds.create(params={"payment_intent": paid.id, "reason": "requested_by_customer"})
    double.dispute(paid.id)
    setup = client.v1.setup_intents.create(params={"customer": customer.id, "payment_method_types": ["card"]})
    saved = client.v1.setup_intents.confirm(
        setup.id, params={"payment_method": "pm_card_visa"}
    ).payment_method
    client.v1.setup_intents.retrieve(setup.id)
    client.v1.payment_intents.create(params=OFF_SESSION | {"customer": customer.id, "payment_method": saved})
    for card in ("pm_card_chargeCustomerFail", "pm_card_authenticationRequired"):
        with pytest.raises(stripe.CardError):
            client.v1.payment_intents.create(params=OFF_SESSION | {"payment_method": card})
    for succeed in (True, False):
        waiting = client.v1.payment_intents.create(
            params=CARD_TOP_UP | {"payment_method": "pm_card_authenticationRequired"}
        )
        client.v1.payment_intents.confirm(waiting.id)
        double.authenticate(waiting.id, succeed=succeed)
    client.v1.payment_intents.cancel(client.v1.payment_intents.create(params=TOP_UP).id)
    for card in ("pm_card_chargeDeclined", "pm_card_authenticationRequired"):
        refused = client.v1.setup_intents.create(
            params={"customer": customer.id, "payment_method_types": ["card"]}
        )
        try:
            client.v1.setup_intents.confirm(refused.id, params={"payment_method": card})
            double.authenticate(refused.id, succeed=False)
        except stripe.CardError:
            client.v1.setup_intents.cancel(refused.id, params={"cancellation_reason": "abandoned"})
    attached = client.v1.payment_methods.attach("pm_card_mastercard", params={"customer": customer.id})
    client.v1.customers.payment_methods.list(customer.id)
    client.v1.payment_methods.list(
        params={"customer": customer.id, "type": "card", "expand": ["data.customer"]}
    )
    client.v1.payment_methods.detach(attached.id)
    for bad in ({**TOP_UP, "amount": 1}, {**TOP_UP, "bogus": 1}):
        with pytest.raises(stripe.InvalidRequestError):
            client.v1.payment_intents.create(params=bad)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.retrieve("pi_missing")
    client.v1.payment_intents.create(params=TOP_UP, options={"idempotency_key": "k"})
    with pytest.raises(stripe.IdempotencyError):
        client.v1.payment_intents.create(params={**TOP_UP, "amount": 60}, options={"idempotency_key": "k"})


def test_every_answer_and_event_conforms_to_the_stripe_library(double, client):
    walk_every_flow(double, client)

    answers = [body for _, _, _, body in double.responses]
    found = [m for body in answers + double.events for m in object_mismatches(body)]

    assert found == []
    answered = {body.get("object", "error") for body in answers}
    emitted = {"event"} | {event["data"]["object"]["object"] for event in double.events}
    assert answered | emitted >= {*RESOURCES, "list", "error"}
    statuses = {b["status"] for b in answers + [e["data"]["object"] for e in double.events] if "status" in b}
    assert statuses >= {
        "requires_payment_method",
        "requires_confirmation",
        "requires_action",
        "succeeded",
        "canceled",
    }


def test_the_conformance_check_catches_a_made_up_field_or_status(double, client):
    intent = client.v1.payment_intents.create(params=TOP_UP).to_dict()
    assert object_mismatches(intent) == []

    made_up = intent | {"status": "paid", "refunded_amount": 0}
    del made_up["client_secret"]
    found = object_mismatches(made_up)

    assert any("status" in m and "'paid'" in m for m in found)
    assert any("refunded_amount: not declared" in m for m in found)
    assert "payment_intent.client_secret: missing" in found
    assert object_mismatches({"object": "payment_method", "card": {"brand": "visa", "exp_month": "12"}})
