"""Wallets, the ledger, top-ups and invoices over HTTP, each customer seeing only
their own."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from iaas.billing import services as billing_services
from iaas.billing.models import LedgerEntry, SettledCharge, TopUp, Wallet
from iaas.cloud import services as cloud_services
from iaas.cloud.models import Charge as CloudCharge
from iaas.contracts.events import InvoiceIssued, LowBalanceReached, TopUpFailed, WalletToppedUp
from tests.api.conftest import assert_problem, client_for
from tests.factories import funded_wallet, record_charges

pytestmark = pytest.mark.django_db

WALLET_FIELDS = {
    "id",
    "currency",
    "status",
    "balance",
    "reserved",
    "available",
    "low_balance_threshold",
    "debt",
    "created_at",
}
ENTRY_FIELDS = {
    "id",
    "sequence",
    "kind",
    "amount",
    "balance_after",
    "transaction_date",
    "posted_at",
    "description",
    "charges",
}
TOP_UP_FIELDS = {
    "id",
    "amount",
    "currency",
    "status",
    "wallet",
    "provider",
    "provider_reference",
    "origin",
    "payment_method",
    "failed_attempts",
    "failure_code",
    "failure_message",
    "debt_paid",
    "created_at",
    "completed_at",
}
# The POST's answer adds how the customer's browser pays (null without a card provider).
TOP_UP_STARTED_FIELDS = TOP_UP_FIELDS | {"client_secret", "publishable_key"}


def as_read_back(answer: dict) -> dict:
    """A POST's answer without what only the POST answers: the top-up as GET shows it."""
    return {name: value for name, value in answer.items() if name in TOP_UP_FIELDS}


def test_open_a_wallet(api, customer):
    response = api.post("/api/v1/wallets/", {"currency": "USD"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == WALLET_FIELDS
    assert body | {"id": None, "created_at": None} == {
        "id": None,
        "currency": "USD",
        "status": "active",
        "balance": 0,
        "reserved": 0,
        "available": 0,
        "low_balance_threshold": None,
        "debt": 0,
        "created_at": None,
    }
    assert Wallet.objects.get(pk=body["id"]).owner == customer


def test_a_second_wallet_in_a_currency_is_409(api, wallet):
    assert_problem(api.post("/api/v1/wallets/", {"currency": "EUR"}), 409, "wallet_exists")
    assert Wallet.objects.filter(owner=wallet.owner).count() == 1


@pytest.mark.parametrize("currency", ["eur", "XXX", "EURO", "", 978, None, ["EUR"]])
def test_an_unsupported_currency_is_400(api, currency):
    body = assert_problem(api.post("/api/v1/wallets/", {"currency": currency}), 400, "validation_error")
    assert "currency" in body["errors"]


def test_the_supported_currencies_are_a_setting(api, settings):
    settings.IAAS_SUPPORTED_CURRENCIES = ["CHF"]
    assert api.post("/api/v1/wallets/", {"currency": "CHF"}).status_code == 201
    assert_problem(api.post("/api/v1/wallets/", {"currency": "USD"}), 400, "validation_error")


def test_list_and_show_wallets_with_balance_reserved_and_available(api, wallet, catalog):
    cloud_services.server_create(
        owner_id=wallet.owner_id, wallet_id=wallet.id, name="web", plan_id="s-2vcpu-4gb"
    )
    listed = api.get("/api/v1/wallets/").json()
    assert listed["next"] is None
    assert listed["previous"] is None
    [shown] = listed["results"]
    assert shown == api.get(f"/api/v1/wallets/{wallet.id}/").json()
    # The first hour (4 cents) is reserved until Billing settles the charge.
    assert (shown["balance"], shown["reserved"], shown["available"]) == (10_000, 4, 9_996)


def test_another_customers_wallet_is_404_everywhere(api, other_customer):
    theirs = funded_wallet(other_customer, amount=5_000)
    assert_problem(api.get(f"/api/v1/wallets/{theirs.id}/"), 404, "not_found")
    assert_problem(api.get(f"/api/v1/wallets/{theirs.id}/ledger/"), 404, "not_found")
    assert_problem(api.post(f"/api/v1/wallets/{theirs.id}/top-ups/", {"amount": 100}), 404, "not_found")
    assert api.get("/api/v1/wallets/").json()["results"] == []
    theirs.refresh_from_db()
    assert theirs.balance == 5_000
    assert TopUp.objects.filter(wallet=theirs).count() == 1


def test_a_wallet_that_does_not_exist_is_404_like_anothers(api):
    missing = "00000000-0000-4000-8000-000000000000"
    assert_problem(api.get(f"/api/v1/wallets/{missing}/"), 404, "not_found")
    assert_problem(api.post(f"/api/v1/wallets/{missing}/top-ups/", {"amount": 1}), 404, "not_found")


def test_top_up_credits_the_wallet_before_answering(api, wallet):
    response = api.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": 2_550})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == TOP_UP_STARTED_FIELDS
    assert (body["client_secret"], body["publishable_key"]) == (None, None)
    assert (body["amount"], body["currency"], body["status"]) == (2_550, "EUR", "succeeded")
    assert (body["wallet"], body["provider"]) == (str(wallet.id), "sandbox")
    assert body["completed_at"] is not None
    assert api.get(f"/api/v1/wallets/{wallet.id}/").json()["balance"] == 12_550


def test_a_top_up_through_a_provider_that_confirms_later_is_pending(api, wallet, settings):
    settings.IAAS_PAYMENT_PROVIDER = "iaas.billing.payments.ManualPaymentProvider"
    body = api.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": 500}).json()
    assert body["status"] == "pending"
    assert (body["provider"], body["completed_at"]) == ("manual", None)
    assert api.get(f"/api/v1/wallets/{wallet.id}/").json()["balance"] == 10_000


@pytest.mark.parametrize(
    "amount", ["10", "1e3", 10.0, 1.5, True, False, None, 0, -5, 100_000_001, 10**30, [10], {"v": 10}]
)
def test_an_amount_that_is_not_a_positive_json_integer_within_the_limit_is_400(api, wallet, amount):
    body = assert_problem(
        api.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": amount}), 400, "validation_error"
    )
    assert "amount" in body["errors"]
    wallet.refresh_from_db()
    assert wallet.balance == 10_000


def test_the_largest_top_up_is_the_limit_and_the_limit_is_a_setting(api, wallet, settings):
    assert api.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": 100_000_000}).status_code == 201
    settings.IAAS_MAX_TOP_UP = 1_000
    assert api.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": 1_000}).status_code == 201
    assert_problem(
        api.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": 1_001}), 400, "validation_error"
    )


def test_a_missing_amount_is_400(api, wallet):
    assert_problem(api.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {}), 400, "validation_error")


def test_top_up_on_a_frozen_wallet_is_409(api, wallet):
    Wallet.objects.filter(pk=wallet.pk).update(status=Wallet.Status.FROZEN)
    assert_problem(
        api.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": 100}), 409, "wallet_not_active"
    )


# --- Top-ups read back ----------------------------------------------------------------


def manual_top_up(api, wallet, amount: int, settings) -> dict:
    """A top-up left pending (the manual provider waits for an operator), as GET shows it."""
    configured = settings.IAAS_PAYMENT_PROVIDER
    settings.IAAS_PAYMENT_PROVIDER = "iaas.billing.payments.ManualPaymentProvider"
    try:
        return as_read_back(api.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": amount}).json())
    finally:
        settings.IAAS_PAYMENT_PROVIDER = configured


def test_a_wallets_top_ups_are_listed_newest_first(api, wallet, settings):
    paid = as_read_back(api.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": 500}).json())
    waiting = manual_top_up(api, wallet, 300, settings)
    listed = api.get(f"/api/v1/wallets/{wallet.id}/top-ups/").json()
    assert (listed["next"], listed["previous"]) == (None, None)
    shown = listed["results"]
    assert all(set(top_up) == TOP_UP_FIELDS for top_up in shown)
    assert [(t["amount"], t["status"], t["provider"]) for t in shown] == [
        (300, "pending", "manual"),
        (500, "succeeded", "sandbox"),
        (10_000, "succeeded", "sandbox"),
    ]
    assert shown[:2] == [waiting, paid]
    assert {t["wallet"] for t in shown} == {str(wallet.id)}
    assert [t["completed_at"] is None for t in shown] == [True, False, False]


def test_one_top_up_shows_its_status_as_it_changes(api, wallet, settings):
    waiting = manual_top_up(api, wallet, 300, settings)
    detail = f"/api/v1/wallets/{wallet.id}/top-ups/{waiting['id']}/"
    assert api.get(detail).json() == waiting
    billing_services.top_up_confirm(top_up_id=waiting["id"])
    shown = api.get(detail).json()
    assert (shown["status"], shown["amount"], shown["created_at"]) == (
        "succeeded",
        300,
        waiting["created_at"],
    )
    assert shown["completed_at"] is not None
    assert api.get(f"/api/v1/wallets/{wallet.id}/").json()["balance"] == 10_300


def test_top_ups_filter_by_status(api, wallet, settings):
    waiting = manual_top_up(api, wallet, 300, settings)
    failed = manual_top_up(api, wallet, 200, settings)
    billing_services.top_up_fail(top_up_id=failed["id"], reason="expired")
    listed = f"/api/v1/wallets/{wallet.id}/top-ups/"
    assert [t["id"] for t in api.get(f"{listed}?status=pending").json()["results"]] == [waiting["id"]]
    assert [t["id"] for t in api.get(f"{listed}?status=failed").json()["results"]] == [failed["id"]]
    assert [t["amount"] for t in api.get(f"{listed}?status=succeeded").json()["results"]] == [10_000]


@pytest.mark.parametrize("query", ["status=done", "status=", "status=PENDING", "page_size=0", "page=x"])
def test_a_bad_top_up_filter_or_page_is_400(api, wallet, query):
    assert_problem(api.get(f"/api/v1/wallets/{wallet.id}/top-ups/?{query}"), 400, "validation_error")


def test_top_ups_are_paginated(api, wallet):
    for amount in (1, 2, 3):
        api.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": amount})
    first = api.get(f"/api/v1/wallets/{wallet.id}/top-ups/?page_size=3").json()
    assert [t["amount"] for t in first["results"]] == [3, 2, 1]
    assert first["previous"] is None
    second = api.get(first["next"]).json()
    assert [t["amount"] for t in second["results"]] == [10_000]
    assert second["next"] is None
    assert_problem(api.get(f"/api/v1/wallets/{wallet.id}/top-ups/?page_size=3&page=3"), 404, "not_found")


def test_another_customers_top_ups_are_404(api, wallet, other_customer):
    theirs = funded_wallet(other_customer, amount=5_000)
    [their_top_up] = TopUp.objects.filter(wallet=theirs)
    assert_problem(api.get(f"/api/v1/wallets/{theirs.id}/top-ups/"), 404, "not_found")
    assert_problem(api.get(f"/api/v1/wallets/{theirs.id}/top-ups/{their_top_up.id}/"), 404, "not_found")
    # Under the customer's own wallet, another's top-up does not exist either.
    assert_problem(api.get(f"/api/v1/wallets/{wallet.id}/top-ups/{their_top_up.id}/"), 404, "not_found")


def test_a_top_up_is_found_only_under_its_own_wallet(api, customer, wallet):
    dollars = funded_wallet(customer, amount=700, currency="USD")
    [dollar_top_up] = TopUp.objects.filter(wallet=dollars)
    assert_problem(api.get(f"/api/v1/wallets/{wallet.id}/top-ups/{dollar_top_up.id}/"), 404, "not_found")
    shown = api.get(f"/api/v1/wallets/{dollars.id}/top-ups/{dollar_top_up.id}/").json()
    assert (shown["amount"], shown["currency"], shown["wallet"]) == (700, "USD", str(dollars.id))
    assert [t["amount"] for t in api.get(f"/api/v1/wallets/{wallet.id}/top-ups/").json()["results"]] == [
        10_000
    ]


def test_a_top_up_that_does_not_exist_is_404(api, wallet):
    missing = "00000000-0000-4000-8000-000000000000"
    assert_problem(api.get(f"/api/v1/wallets/{wallet.id}/top-ups/{missing}/"), 404, "not_found")
    assert_problem(api.get(f"/api/v1/wallets/{missing}/top-ups/"), 404, "not_found")
    assert_problem(api.get(f"/api/v1/wallets/{wallet.id}/top-ups/not-a-uuid/"), 404, "not_found")


def test_a_read_key_reads_top_ups_but_cannot_top_up(customer, wallet):
    reader = client_for(customer, scope="read")
    [top_up] = reader.get(f"/api/v1/wallets/{wallet.id}/top-ups/").json()["results"]
    assert reader.get(f"/api/v1/wallets/{wallet.id}/top-ups/{top_up['id']}/").status_code == 200
    response = reader.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": 100}, format="json")
    assert_problem(response, 403, "permission_denied")
    assert TopUp.objects.filter(wallet=wallet).count() == 1


# --- Ledger ---------------------------------------------------------------------------


def test_the_ledger_is_newest_first_with_running_balances(api, wallet, catalog, deliver):
    api.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": 500})
    cloud_services.server_create(
        owner_id=wallet.owner_id, wallet_id=wallet.id, name="web", plan_id="s-2vcpu-4gb"
    )
    deliver()
    entries = api.get(f"/api/v1/wallets/{wallet.id}/ledger/").json()["results"]
    assert all(set(entry) == ENTRY_FIELDS for entry in entries)
    assert [(e["sequence"], e["kind"], e["amount"], e["balance_after"]) for e in entries] == [
        (3, "charge", -4, 10_496),
        (2, "top_up", 500, 10_500),
        (1, "top_up", 10_000, 10_000),
    ]
    [charge] = CloudCharge.objects.filter(wallet_id=wallet.id)
    assert [e["charges"] for e in entries] == [[str(charge.id)], [], []]
    assert api.get(f"/api/v1/wallets/{wallet.id}/").json()["balance"] == sum(e["amount"] for e in entries)


def test_a_charge_entry_lists_the_charges_it_settles(api, wallet, deliver):
    usage = record_charges(wallet, [96, 96, 40])
    deliver()
    ledger = f"/api/v1/wallets/{wallet.id}/ledger/"
    api.get(ledger)  # the key's first use of the minute is recorded once
    with CaptureQueriesContext(connection) as one_entry:
        [entry, _] = api.get(ledger).json()["results"]
    assert (entry["kind"], entry["amount"], entry["description"]) == ("charge", -232, "Cloud: 3 charges")
    assert sorted(entry["charges"]) == sorted(str(c.charge_id) for c in usage.charges)
    for _ in range(3):
        record_charges(wallet, [10, 20])
        deliver()
    with CaptureQueriesContext(connection) as four_entries:
        assert len(api.get(ledger).json()["results"]) == 5
    # The page's charges come in one query, whatever the number of entries.
    assert len(four_entries.captured_queries) == len(one_entry.captured_queries)


def test_the_ledger_pages_with_a_cursor(api, wallet):
    for _ in range(4):
        api.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": 1})
    first = api.get(f"/api/v1/wallets/{wallet.id}/ledger/?page_size=2").json()
    assert [e["sequence"] for e in first["results"]] == [5, 4]
    assert first["previous"] is None
    second = api.get(first["next"]).json()
    assert [e["sequence"] for e in second["results"]] == [3, 2]
    third = api.get(second["next"]).json()
    assert [e["sequence"] for e in third["results"]] == [1]
    assert third["next"] is None
    assert [e["sequence"] for e in api.get(third["previous"]).json()["results"]] == [3, 2]


def test_a_bad_cursor_is_404_and_a_bad_page_size_is_400(api, wallet):
    assert_problem(api.get(f"/api/v1/wallets/{wallet.id}/ledger/?cursor=garbage"), 404, "not_found")
    for size in ("0", "-1", "abc", "201", ""):
        assert_problem(
            api.get(f"/api/v1/wallets/{wallet.id}/ledger/?page_size={size}"), 400, "validation_error"
        )


def test_the_ledger_filters_by_kind_and_transaction_date(api, wallet, catalog, deliver):
    cloud_services.server_create(
        owner_id=wallet.owner_id, wallet_id=wallet.id, name="web", plan_id="s-1vcpu-1gb"
    )
    deliver()
    ledger = f"/api/v1/wallets/{wallet.id}/ledger/"
    assert [e["kind"] for e in api.get(f"{ledger}?kind=charge").json()["results"]] == ["charge"]
    assert [e["kind"] for e in api.get(f"{ledger}?kind=top_up").json()["results"]] == ["top_up"]

    today = timezone.now().date()
    tomorrow = today + dt.timedelta(days=1)
    assert len(api.get(f"{ledger}?transaction_date_after={today}").json()["results"]) == 2
    assert len(api.get(f"{ledger}?transaction_date_before={today}").json()["results"]) == 2
    assert api.get(f"{ledger}?transaction_date_after={tomorrow}").json()["results"] == []
    both = api.get(f"{ledger}?kind=charge&transaction_date_after={today}&transaction_date_before={today}")
    assert len(both.json()["results"]) == 1


@pytest.mark.parametrize(
    "query", ["kind=bonus", "kind=", "transaction_date_after=yesterday", "transaction_date_before=2026-13-01"]
)
def test_a_bad_ledger_filter_is_400(api, wallet, query):
    assert_problem(api.get(f"/api/v1/wallets/{wallet.id}/ledger/?{query}"), 400, "validation_error")


def test_ledger_entries_never_leak_between_wallets(api, wallet, other_customer):
    funded_wallet(other_customer, amount=777)
    amounts = [e["amount"] for e in api.get(f"/api/v1/wallets/{wallet.id}/ledger/").json()["results"]]
    assert amounts == [10_000]
    assert LedgerEntry.objects.count() == 2


# --- Invoices -------------------------------------------------------------------------


def test_invoices_list_is_paginated_and_empty_until_one_is_issued(api):
    assert api.get("/api/v1/invoices/").json() == {"count": 0, "next": None, "previous": None, "results": []}


def test_an_invoice_that_is_not_yours_is_404(api):
    assert_problem(api.get("/api/v1/invoices/00000000-0000-4000-8000-000000000000/"), 404, "not_found")


def issued_invoice(customer, time_machine):
    """A real invoice: a hosting purchase in October, settled, invoiced in November."""
    from iaas.billing.invoicing import invoice_issue
    from iaas.common.periods import Month
    from iaas.contracts import bus
    from iaas.hosting import services as hosting
    from tests.conftest import install_catalogs
    from tests.factories import funded_wallet

    install_catalogs()
    time_machine.move_to(dt.datetime(2026, 10, 14, 9, 30, tzinfo=dt.UTC), tick=False)
    wallet = funded_wallet(customer, amount=1_000)
    hosting.subscription_create(
        owner_id=customer.id, wallet_id=wallet.id, domain="example.com", plan_id="web-starter"
    )
    bus.deliver_pending()
    time_machine.move_to(dt.datetime(2026, 11, 1, 2, 0, tzinfo=dt.UTC))
    return invoice_issue(wallet_id=wallet.id, period=Month(2026, 10))


def test_an_issued_invoice_is_listed_and_shown_with_its_lines(api, customer, other_customer, time_machine):
    invoice = issued_invoice(customer, time_machine)
    [listed] = api.get("/api/v1/invoices/").json()["results"]
    assert set(listed) == {
        "id",
        "number",
        "issued_at",
        "period_start",
        "period_end",
        "currency",
        "total",
        "lines",
    }
    assert (listed["id"], listed["number"], listed["currency"], listed["total"]) == (
        str(invoice.id),
        "INV-2026-000001",
        "EUR",
        399,
    )
    assert listed["period_start"].startswith("2026-10-01T00:00:00")
    [charge] = SettledCharge.objects.filter(invoice_line__invoice=invoice)
    assert listed["lines"] == [
        {
            "description": "Hosting example.com (web-starter), first month",
            "amount": 399,
            "transaction_date": "2026-10-14T09:30:00Z",
            "context": "hosting",
            "subject_id": str(charge.subject_id),
            "period_start": "2026-10-14T09:30:00Z",
            "period_end": "2026-11-14T09:30:00Z",
            "charges": [str(charge.charge_id)],
        }
    ]
    assert api.get(f"/api/v1/invoices/{invoice.id}/").json() == listed


def test_another_customers_invoice_is_not_found(api, other_customer, time_machine):
    invoice = issued_invoice(other_customer, time_machine)
    assert api.get("/api/v1/invoices/").json()["results"] == []
    assert_problem(api.get(f"/api/v1/invoices/{invoice.id}/"), 404, "not_found")


# --- The low-balance threshold (PATCH /wallets/{id}/) ------------------------------------


def test_the_owner_sets_a_low_balance_threshold_and_gets_the_wallet(api, wallet):
    response = api.patch(f"/api/v1/wallets/{wallet.id}/", {"low_balance_threshold": 2_500}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == WALLET_FIELDS
    assert (body["id"], body["low_balance_threshold"], body["balance"]) == (str(wallet.id), 2_500, 10_000)
    assert api.get(f"/api/v1/wallets/{wallet.id}/").json() == body


def test_null_turns_the_threshold_off(api, wallet):
    api.patch(f"/api/v1/wallets/{wallet.id}/", {"low_balance_threshold": 0}, format="json")
    assert Wallet.objects.get(pk=wallet.pk).low_balance_threshold == 0
    response = api.patch(f"/api/v1/wallets/{wallet.id}/", {"low_balance_threshold": None}, format="json")
    assert response.status_code == 200
    assert response.json()["low_balance_threshold"] is None
    assert Wallet.objects.get(pk=wallet.pk).low_balance_threshold is None


def test_only_the_threshold_is_writable(api, wallet):
    api.patch(f"/api/v1/wallets/{wallet.id}/", {"low_balance_threshold": 700}, format="json")
    body = {"balance": 1, "reserved": 5, "status": "closed", "currency": "USD", "available": 9}
    response = api.patch(f"/api/v1/wallets/{wallet.id}/", body, format="json")
    assert response.status_code == 200
    assert response.json() | {"created_at": None} == {
        "id": str(wallet.id),
        "currency": "EUR",
        "status": "active",
        "balance": 10_000,
        "reserved": 0,
        "available": 10_000,
        "low_balance_threshold": 700,  # a PATCH without it leaves it as it is
        "debt": 0,
        "created_at": None,
    }


@pytest.mark.parametrize(
    "threshold", ["10", "1e3", 10.0, 1.5, True, False, -1, 100_000_001, 10**30, [10], {"v": 10}]
)
def test_a_threshold_that_is_not_a_json_integer_from_0_to_the_limit_is_400(api, wallet, threshold):
    body = assert_problem(
        api.patch(f"/api/v1/wallets/{wallet.id}/", {"low_balance_threshold": threshold}, format="json"),
        400,
        "validation_error",
    )
    assert "low_balance_threshold" in body["errors"]
    assert Wallet.objects.get(pk=wallet.pk).low_balance_threshold is None


def test_the_threshold_limit_is_the_top_up_limit_setting(api, wallet, settings):
    settings.IAAS_MAX_TOP_UP = 1_000
    path = f"/api/v1/wallets/{wallet.id}/"
    assert api.patch(path, {"low_balance_threshold": 1_000}, format="json").status_code == 200
    assert_problem(api.patch(path, {"low_balance_threshold": 1_001}, format="json"), 400, "validation_error")


def test_another_customers_wallet_threshold_is_404_and_unchanged(api, other_customer):
    theirs = funded_wallet(other_customer, amount=5_000)
    assert_problem(
        api.patch(f"/api/v1/wallets/{theirs.id}/", {"low_balance_threshold": 100}, format="json"),
        404,
        "not_found",
    )
    missing = "00000000-0000-4000-8000-000000000000"
    assert_problem(
        api.patch(f"/api/v1/wallets/{missing}/", {"low_balance_threshold": 100}, format="json"),
        404,
        "not_found",
    )
    assert Wallet.objects.get(pk=theirs.pk).low_balance_threshold is None


def test_a_read_key_cannot_set_the_threshold(customer, wallet):
    reader = client_for(customer, scope="read")
    response = reader.patch(f"/api/v1/wallets/{wallet.id}/", {"low_balance_threshold": 100}, format="json")
    assert_problem(response, 403, "permission_denied")
    assert Wallet.objects.get(pk=wallet.pk).low_balance_threshold is None


def test_setting_a_threshold_tells_nothing_a_purchase_crossing_it_does(api, wallet, published):
    for threshold in (20_000, 30_000, None, 20_000):  # back and forth: no alert per request
        api.patch(f"/api/v1/wallets/{wallet.id}/", {"low_balance_threshold": threshold}, format="json")
    assert [e for e in published if isinstance(e, LowBalanceReached)] == []
    api.patch(f"/api/v1/wallets/{wallet.id}/", {"low_balance_threshold": 9_999}, format="json")
    bought = api.post(
        "/api/v1/cloud/servers/",
        {"name": "web-1", "plan": "s-2vcpu-4gb", "wallet": str(wallet.id)},
        format="json",
    )
    assert bought.status_code == 201
    [alert] = [e for e in published if isinstance(e, LowBalanceReached)]
    assert (alert.available, alert.threshold) == (10_000 - 4, 9_999)


# --- Events show what the API shows --------------------------------------------------------


def test_a_top_ups_event_shows_the_top_up_as_the_post_answered_it(api, customer, wallet, published):
    answer = as_read_back(api.post(f"/api/v1/wallets/{wallet.id}/top-ups/", {"amount": 2_550}).json())
    [told] = [e for e in published if isinstance(e, WalletToppedUp) and str(e.top_up_id) == answer["id"]]
    assert (told.owner_id, told.resource) == (customer.id, answer)
    assert told.resource == api.get(f"/api/v1/wallets/{wallet.id}/top-ups/{answer['id']}/").json()


def test_a_failed_top_ups_event_shows_the_top_up_as_get_shows_it(api, customer, wallet, settings, published):
    waiting = manual_top_up(api, wallet, 300, settings)
    billing_services.top_up_fail(top_up_id=waiting["id"], reason="expired")
    [told] = [e for e in published if isinstance(e, TopUpFailed)]
    assert (told.owner_id, told.reason, told.resource["status"]) == (customer.id, "expired", "failed")
    assert told.resource == api.get(f"/api/v1/wallets/{wallet.id}/top-ups/{waiting['id']}/").json()


def test_a_low_balance_event_shows_the_wallet_as_get_shows_it(api, customer, wallet, catalog, published):
    api.patch(f"/api/v1/wallets/{wallet.id}/", {"low_balance_threshold": 9_999}, format="json")
    cloud_services.server_create(owner_id=customer.id, wallet_id=wallet.id, name="web", plan_id="s-2vcpu-4gb")
    [alert] = [e for e in published if isinstance(e, LowBalanceReached)]
    assert (alert.owner_id, alert.available) == (customer.id, 9_996)
    assert alert.resource == api.get(f"/api/v1/wallets/{wallet.id}/").json()


def test_an_invoices_event_shows_the_invoice_as_get_shows_it(api, customer, time_machine, published):
    invoice = issued_invoice(customer, time_machine)
    [told] = [e for e in published if isinstance(e, InvoiceIssued)]
    assert (told.invoice_id, told.owner_id) == (invoice.id, customer.id)
    assert told.resource == api.get(f"/api/v1/invoices/{invoice.id}/").json()
