"""Hosting over HTTP: the hosting catalog, subscribing, listing, showing and cancelling
subscriptions, each customer seeing only their own."""

from __future__ import annotations

import pytest
from dateutil.relativedelta import relativedelta
from django.utils.dateparse import parse_datetime

from iaas.billing.models import Wallet
from iaas.hosting import services as hosting_services
from iaas.hosting.models import Allowance, Charge, HostingPlan, Subscription
from tests.api.conftest import assert_problem
from tests.factories import funded_wallet

pytestmark = pytest.mark.django_db

SUBSCRIPTIONS = "/api/v1/hosting/subscriptions/"
FIELDS = {
    "id",
    "domain",
    "plan",
    "wallet",
    "status",
    "created_at",
    "current_period_end",
    "suspension_causes",
    "cancels_at",
}


def subscribe(client, paying_wallet, **overrides):
    body = {"domain": "example.com", "plan": "web-starter", "wallet": str(paying_wallet.id)} | overrides
    return client.post(SUBSCRIPTIONS, body)


def test_the_plans_are_public_cheapest_first(anonymous, catalog):
    HostingPlan.objects.filter(pk="web-pro").update(is_active=False)
    plans = anonymous.get("/api/v1/hosting/plans/").json()["results"]
    assert plans == [
        {
            "id": "web-starter",
            "name": "Web Starter",
            "storage_gb": 10,
            "price_per_month": 399,
            "currency": "EUR",
        },
        {
            "id": "web-business",
            "name": "Web Business",
            "storage_gb": 50,
            "price_per_month": 999,
            "currency": "EUR",
        },
    ]


def test_subscribe(api, wallet, catalog, deliver):
    response = subscribe(api, wallet, domain="Shop.Example.COM")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == FIELDS
    assert (body["domain"], body["plan"], body["wallet"], body["status"]) == (
        "shop.example.com",
        "web-starter",
        str(wallet.id),
        "active",
    )
    created = parse_datetime(body["created_at"])
    assert (
        abs(parse_datetime(body["current_period_end"]) - (created + relativedelta(months=1))).total_seconds()
        < 1
    )
    deliver()
    assert api.get(f"/api/v1/wallets/{wallet.id}/").json()["balance"] == 10_000 - 399


def test_a_wallet_that_cannot_pay_the_first_month_is_402_and_nothing_is_created(api, customer, catalog):
    poor = funded_wallet(customer, amount=398)
    assert_problem(subscribe(api, poor), 402, "insufficient_funds")
    assert not Subscription.objects.exists()
    assert not Charge.objects.exists()
    poor.refresh_from_db()
    assert poor.reserved == 0


def test_a_plan_in_another_currency_is_409(api, customer, catalog):
    pounds = funded_wallet(customer, amount=10_000, currency="GBP")
    assert_problem(subscribe(api, pounds), 409, "currency_mismatch")
    assert not Subscription.objects.exists()


def test_a_frozen_wallet_is_409(api, wallet, catalog):
    Wallet.objects.filter(pk=wallet.pk).update(status=Wallet.Status.FROZEN)
    assert_problem(subscribe(api, wallet), 409, "wallet_not_active")


def test_a_domain_with_a_live_subscription_is_409_whoever_holds_it(
    api, other_api, wallet, other_customer, catalog
):
    assert subscribe(api, wallet).status_code == 201
    assert_problem(subscribe(api, wallet, domain="EXAMPLE.com"), 409, "domain_taken")
    theirs = funded_wallet(other_customer, amount=1_000)
    assert_problem(subscribe(other_api, theirs), 409, "domain_taken")
    assert Subscription.objects.count() == 1
    theirs.refresh_from_db()
    assert theirs.reserved == 0


def test_a_cancelled_subscription_frees_its_domain(api, wallet, catalog):
    first = subscribe(api, wallet).json()
    api.delete(f"{SUBSCRIPTIONS}{first['id']}/")
    assert subscribe(api, wallet).status_code == 201


@pytest.mark.parametrize(
    "domain",
    [
        "a.b",
        "example.com",
        "xn--bcher-kva.example",
        "a-b.c-d.example",
        "x" * 63 + ".com",
        ("a." * 125) + "com",
    ],
)
def test_a_fully_qualified_domain_name_is_accepted(api, wallet, catalog, domain):
    assert subscribe(api, wallet, domain=domain).status_code == 201


@pytest.mark.parametrize(
    "domain",
    [
        "localhost",
        "example",
        "",
        ".example.com",
        "example.com.",
        "exa mple.com",
        "-example.com",
        "example-.com",
        "exa_mple.com",
        "example..com",
        "x" * 64 + ".com",
        ("a." * 126) + "com",
        "10.0.0.1",
        "bücher.example",
        "example.com\n",
        "example.123",
        42,
        None,
    ],
)
def test_an_invalid_domain_is_400(api, wallet, catalog, domain):
    body = assert_problem(subscribe(api, wallet, domain=domain), 400, "validation_error")
    assert "domain" in body["errors"]
    assert not Subscription.objects.exists()


@pytest.mark.parametrize("plan", ["web-ultimate", "", 3, None])
def test_an_unknown_plan_is_400(api, wallet, catalog, plan):
    assert_problem(subscribe(api, wallet, plan=plan), 400, "validation_error")


@pytest.mark.parametrize("wallet_id", ["nope", 7, None])
def test_a_malformed_wallet_id_is_400(api, wallet, catalog, wallet_id):
    assert_problem(subscribe(api, wallet, wallet=wallet_id), 400, "validation_error")


def test_subscribing_on_another_customers_wallet_is_404_and_changes_nothing(api, other_customer, catalog):
    theirs = funded_wallet(other_customer, amount=10_000)
    assert_problem(subscribe(api, theirs), 404, "not_found")
    assert not Subscription.objects.exists()
    assert not Allowance.objects.exists()
    theirs.refresh_from_db()
    assert (theirs.balance, theirs.reserved) == (10_000, 0)


def test_list_subscriptions_filtered_by_status(api, wallet, catalog, other_customer):
    first = subscribe(api, wallet, domain="one.example").json()
    subscribe(api, wallet, domain="two.example")
    api.delete(f"{SUBSCRIPTIONS}{first['id']}/")
    theirs = funded_wallet(other_customer, amount=1_000)
    hosting_services.subscription_create(
        owner_id=other_customer.id, wallet_id=theirs.id, domain="theirs.example", plan_id="web-starter"
    )
    assert {s["domain"] for s in api.get(SUBSCRIPTIONS).json()["results"]} == {"one.example", "two.example"}
    assert [s["domain"] for s in api.get(f"{SUBSCRIPTIONS}?status=active").json()["results"]] == [
        "two.example"
    ]
    assert [s["domain"] for s in api.get(f"{SUBSCRIPTIONS}?status=cancelled").json()["results"]] == [
        "one.example"
    ]
    assert_problem(api.get(f"{SUBSCRIPTIONS}?status=terminated"), 400, "validation_error")


def test_show_and_cancel_a_subscription(api, wallet, catalog):
    subscription = subscribe(api, wallet).json()
    assert api.get(f"{SUBSCRIPTIONS}{subscription['id']}/").json() == subscription
    cancelled = api.delete(f"{SUBSCRIPTIONS}{subscription['id']}/")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    # The paid period runs on: the end does not move.
    assert cancelled.json()["current_period_end"] == subscription["current_period_end"]
    assert api.delete(f"{SUBSCRIPTIONS}{subscription['id']}/").json()["status"] == "cancelled"


def test_another_customers_subscription_is_404_to_show_and_to_cancel(api, other_api, wallet, catalog):
    subscription = subscribe(api, wallet).json()
    assert_problem(other_api.get(f"{SUBSCRIPTIONS}{subscription['id']}/"), 404, "not_found")
    assert_problem(other_api.delete(f"{SUBSCRIPTIONS}{subscription['id']}/"), 404, "not_found")
    assert other_api.get(SUBSCRIPTIONS).json()["results"] == []
    assert Subscription.objects.get(pk=subscription["id"]).status == "active"


def test_a_suspended_subscription_shows_its_causes_and_when_it_will_be_cancelled(
    api, wallet, catalog, settings
):
    subscription = hosting_services.subscription_create(
        owner_id=wallet.owner_id, wallet_id=wallet.id, domain="example.com", plan_id="web-starter"
    )
    body = api.get(f"{SUBSCRIPTIONS}{subscription.id}/").json()
    assert (body["suspension_causes"], body["cancels_at"]) == ([], None)
    Subscription.objects.filter(pk=subscription.pk).update(
        status="suspended", suspended_at=subscription.created_at, unpaid_since=subscription.created_at
    )
    body = api.get(f"{SUBSCRIPTIONS}{subscription.id}/").json()
    assert body["suspension_causes"] == ["unpaid"]
    expected = subscription.created_at + relativedelta(days=settings.IAAS_HOSTING_GRACE_DAYS)
    assert parse_datetime(body["cancels_at"]) == expected
