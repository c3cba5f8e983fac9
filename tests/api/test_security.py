"""Every endpoint of the API against every kind of credential (issue 12, item 5): no
key, a bad key, a revoked key, an expired key, a read key on writes, another customer's
key. The endpoints come from the URL resolver (drf-spectacular's enumerator, the one
the schema is made from), so a new endpoint is in this table the day it is added; one
whose path parameter this module cannot fill fails until it is taught here. A selling
context's services fill their paths without being named: each registered context's
demo buys one, found by the model its view shows."""

from __future__ import annotations

import datetime as dt
import re
import secrets

import pytest
from django.utils import timezone
from drf_spectacular.generators import EndpointEnumerator
from rest_framework import permissions

from iaas.api import keys
from iaas.billing import services as billing_services
from iaas.billing.models import Wallet
from iaas.billing.payments import auto, methods
from iaas.contracts import bus
from iaas.notifications import webhooks
from iaas.notifications.models import WebhookDelivery
from iaas.spending.apps import selling_context_configs
from tests.api.conftest import assert_problem, client_for
from tests.api.test_billing import issued_invoice
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def api_endpoints() -> list[tuple[str, str, type]]:
    """(path template, method, view class) of every operation under /api/v1/."""
    return [
        (path, method, callback.cls)
        for path, _regex, method, callback in EndpointEnumerator().get_api_endpoints()
        if path.startswith("/api/v1/")
    ]


def is_public(view_class) -> bool:
    return not view_class.authentication_classes or permissions.AllowAny in view_class.permission_classes


ENDPOINTS = api_endpoints()
IDS = [f"{method} {path}" for path, method, _ in ENDPOINTS]

# Which of the customer's objects fills each path parameter, by path prefix.
OBJECT_OF_PATH = [
    (r"^/api/v1/wallets/\{(pk|wallet_id)\}/", "wallet"),
    (r"^/api/v1/wallets/[^/{]+/top-ups/\{top_up_id\}/", "top_up"),
    (r"^/api/v1/invoices/\{invoice_id\}/", "invoice"),
    (r"^/api/v1/auth/keys/\{pk\}/", "api_key"),
    (r"^/api/v1/webhooks/endpoints/\{pk\}/", "webhook_endpoint"),
    (r"^/api/v1/webhooks/deliveries/\{pk\}/", "webhook_delivery"),
    (r"^/api/v1/payment-methods/\{pk\}/", "payment_method"),
]
# A valid body for the writes that name an object, so that another customer's key
# reaches the lookup (and not a 400).
BODIES = {
    ("/api/v1/wallets/{wallet_id}/top-ups/", "POST"): {"amount": 100},
    ("/api/v1/webhooks/endpoints/{pk}/", "PATCH"): {"enabled": False},
    ("/api/v1/wallets/{wallet_id}/auto-top-up/", "PUT"): lambda objects: {
        "threshold": 100,
        "amount": 1_000,
        "payment_method": str(objects["payment_method"]),
    },
}


def test_the_table_covers_the_api():
    """The enumerator sees every endpoint, API keys included (a sanity check on the
    derivation itself, not a list to keep up to date)."""
    paths = {path for path, _, _ in ENDPOINTS}
    assert {"/api/v1/auth/keys/", "/api/v1/wallets/", "/api/v1/cloud/plans/"} <= paths
    assert len(ENDPOINTS) >= 20


@pytest.fixture
def world(customer, time_machine):
    """The customer's objects of every kind, and their keys of every kind."""
    invoice = issued_invoice(customer, time_machine)
    time_machine.move_to(timezone.now() + dt.timedelta(days=40))  # past the paid periods' clocks
    endpoint = webhooks.endpoint_create(
        owner_id=customer.pk, url="http://127.0.0.1:9/hooks", event_types=["top_up.succeeded"]
    ).endpoint
    top_up = billing_services.top_up_create(
        wallet_id=invoice.wallet_id, owner_id=customer.pk, amount=10_000_000
    )
    bus.deliver_pending()  # the top-up's notification: a delivery to that endpoint (never sent here)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    wallet = Wallet.objects.get(pk=invoice.wallet_id)
    sold = {}
    for config in selling_context_configs():
        config.demo_module().seed_purchase(owner_id=customer.pk, wallet_id=wallet.id)
        for model_name, _ in config.service_pages:
            model = config.get_model(model_name)
            sold[model._meta.label_lower] = model.objects.get(owner=customer).pk
    card = methods.payment_method_start(owner_id=customer.pk).method
    auto.auto_top_up_set(
        wallet_id=wallet.id, owner_id=customer.pk, threshold=100, amount=1_000, payment_method_id=card.id
    )
    spare_key = keys.api_key_create(owner_id=customer.pk, name="spare").api_key
    revoked = keys.api_key_create(owner_id=customer.pk, name="revoked")
    keys.api_key_revoke(owner_id=customer.pk, key_id=revoked.api_key.pk)
    expired = keys.api_key_create(
        owner_id=customer.pk, name="expired", expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    return {
        "objects": {
            "wallet": wallet.id,
            "top_up": top_up.id,
            "invoice": invoice.id,
            "api_key": spare_key.pk,
            "webhook_endpoint": endpoint.pk,
            "webhook_delivery": delivery.pk,
            "payment_method": card.pk,
            **sold,
        },
        "keys": {
            "bad": keys.generate_key(),
            "bad_legacy": secrets.token_hex(20),
            "revoked": revoked.key,
            "expired": expired.key,
            "read": keys.api_key_create(owner_id=customer.pk, name="read", scope="read").key,
            "other": keys.api_key_create(owner_id=UserFactory().pk, name="other").key,
        },
    }


def concrete(path: str, objects: dict, view_class: type) -> str:
    """``path`` with each of its parameters filled in turn, outermost first (a top-up's
    wallet, then the top-up)."""
    while "{" in path:
        path = fill_first_parameter(path, objects, view_class)
    return path


def fill_first_parameter(path: str, objects: dict, view_class: type) -> str:
    for pattern, kind in OBJECT_OF_PATH:
        if re.match(pattern, path):
            return re.sub(r"\{[^}]+\}", str(objects[kind]), path, count=1)
    shown = getattr(getattr(view_class, "serializer_class", None), "Meta", None)
    if shown is not None and shown.model._meta.label_lower in objects:
        return re.sub(r"\{[^}]+\}", str(objects[shown.model._meta.label_lower]), path, count=1)
    pytest.fail(f"teach OBJECT_OF_PATH which object fills {path}")


def send(path: str, method: str, key: str | None, *, body: dict | None = None):
    client = client_for()
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return getattr(client, method.lower())(path, body if body is not None else {}, format="json")


@pytest.mark.parametrize(("path", "method", "view_class"), ENDPOINTS, ids=IDS)
@pytest.mark.parametrize("credential", ["bad", "bad_legacy", "revoked", "expired"])
def test_credentials_that_do_not_authenticate_are_401_everywhere(world, path, method, view_class, credential):
    response = send(concrete(path, world["objects"], view_class), method, world["keys"][credential])
    assert_problem(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize(("path", "method", "view_class"), ENDPOINTS, ids=IDS)
def test_no_key_is_401_but_on_the_public_endpoints(world, path, method, view_class):
    response = send(concrete(path, world["objects"], view_class), method, None)
    if is_public(view_class):
        assert response.status_code in (200, 400), (response.status_code, response.content)
    else:
        assert_problem(response, 401, "not_authenticated")


@pytest.mark.parametrize(("path", "method", "view_class"), ENDPOINTS, ids=IDS)
def test_a_read_key_reads_and_is_refused_every_write(world, path, method, view_class):
    response = send(concrete(path, world["objects"], view_class), method, world["keys"]["read"])
    if method in WRITES and not is_public(view_class):
        assert_problem(response, 403, "permission_denied")
    elif method == "GET":
        assert response.status_code == 200, (response.status_code, response.content)


@pytest.mark.parametrize(
    ("path", "method", "view_class"), [e for e in ENDPOINTS if "{" in e[0]], ids=[i for i in IDS if "{" in i]
)
def test_another_customers_key_finds_none_of_the_customers_objects(world, path, method, view_class):
    body = BODIES.get((path, method))
    response = send(
        concrete(path, world["objects"], view_class),
        method,
        world["keys"]["other"],
        body=body(world["objects"]) if callable(body) else body,
    )
    assert_problem(response, 404, "not_found")
