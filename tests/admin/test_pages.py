"""Every page of the operator console loads, with data present, for every role."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.admin.payment_rows import SEARCH as PAYMENT_SEARCH

CONSOLE_APPS = {"billing", "cloud", "hosting", "contracts"}
MODELS = sorted(
    (model for model in admin.site._registry if model._meta.app_label in CONSOLE_APPS),
    key=lambda model: model._meta.label,
)
ROLES = ["superuser", "finance", "support"]


def admin_name(model, view: str) -> str:
    return f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}"


def test_every_model_of_every_context_is_registered():
    from django.apps import apps

    missing = [
        model._meta.label
        for label in CONSOLE_APPS
        for model in apps.get_app_config(label).get_models()
        if model not in admin.site._registry
    ]
    assert missing == []


def search_term(model, books) -> str:
    """Something an operator would paste: the plan's name, else the wallet id."""
    if model._meta.model_name.endswith("plan"):
        return "basic" if model._meta.app_label == "cloud" else "web"
    if model._meta.model_name == "invoiceseries":
        return "INV"
    if model._meta.model_name == "inboxrecord":
        return "tests.consumer"
    if model._meta.model_name in ("paymentevent", "parkedpayment"):
        return PAYMENT_SEARCH
    return str(books["wallet"].id)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("model", MODELS, ids=lambda model: model._meta.label)
def test_changelist_search_and_change_view_load(as_role, books, role, model):
    client = as_role(role)
    changelist = reverse(admin_name(model, "changelist"))

    response = client.get(changelist)
    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1, "no rows shown"

    response = client.get(changelist, {"q": search_term(model, books)})
    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1, "the search found nothing"

    shown = response.context["cl"].result_list[0]
    response = client.get(reverse(admin_name(model, "change"), args=[shown.pk]))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("model_name", "term"),
    [
        ("billing_wallet", "alice"),
        ("billing_wallet", "alice@customers.example"),
        ("billing_ledgerentry", "alice"),
        ("cloud_server", "web-1"),
        ("cloud_server", "alice"),
        ("hosting_subscription", "alice-shop.example"),
        ("hosting_subscription", "ALICE@customers.example"),
        ("billing_invoice", "INV-20"),
        ("billing_invoice", "alice"),
    ],
)
def test_search_finds_the_customer(as_role, books, model_name, term):
    response = as_role("support").get(reverse(f"admin:{model_name}_changelist"), {"q": term})
    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1


def test_wallet_list_answers_the_first_question(as_role, books):
    response = as_role("support").get(reverse("admin:billing_wallet_changelist"))
    page = response.content.decode()
    wallet = books["wallet"]
    assert "alice &lt;alice@customers.example&gt;" in page
    assert wallet.money(wallet.balance) in page
    assert wallet.money(wallet.reserved) in page
    assert wallet.money(wallet.available) in page


def test_wallet_page_follows_the_money(as_role, books):
    wallet = books["wallet"]
    page = as_role("support").get(reverse("admin:billing_wallet_change", args=[wallet.pk])).content.decode()
    assert "Goodwill credit" in page  # the latest ledger entries
    for link in [
        reverse("admin:billing_ledgerentry_changelist") + f"?wallet__id__exact={wallet.pk}",
        reverse("admin:billing_hold_changelist") + f"?wallet__id__exact={wallet.pk}",
        reverse("admin:billing_reservation_changelist") + f"?wallet__id__exact={wallet.pk}",
        reverse("admin:cloud_server_changelist") + f"?wallet_id={wallet.pk}",
        reverse("admin:hosting_subscription_changelist") + f"?wallet_id={wallet.pk}",
    ]:
        assert f'href="{link}"' in page
        assert as_role("support").get(link).context["cl"].result_count >= 1


def test_wallet_page_links_every_page_about_the_wallet_in_order(as_role, books):
    """The "Follow the money" list: Billing's pages, then each selling context's pages as
    the context registered them (Billing names no context), then the wallet's events."""
    import re

    wallet = books["wallet"]
    page = as_role("support").get(reverse("admin:billing_wallet_change", args=[wallet.pk])).content.decode()
    links = re.search(r'<ul class="iaas-links">(.*?)</ul>', page, re.S).group(1)
    titles = [re.sub(r"<[^>]+>", "", item) for item in re.findall(r"<li>(.*?)</li>", links, re.S)]
    assert titles == [
        f"Customer {wallet.owner.get_username()}",
        titles[1],  # "All N ledger entries"
        "Holds",
        "Reservations",
        "Top-ups",
        "Adjustments",
        "Cloud servers",
        "Cloud charges",
        "Cloud allowance",
        "Hosting subscriptions",
        "Hosting charges",
        "Hosting allowance",
        "Storage volumes",
        "Storage charges",
        "Storage allowance",
        "Events about this wallet",
    ]
    assert re.fullmatch(r"All \d+ ledger entries", titles[1])
    for url_name in ["cloud_allowance_changelist", "hosting_charge_changelist"]:
        assert f'href="{reverse(f"admin:{url_name}")}?wallet_id={wallet.pk}"' in links


def test_the_filtered_lists_show_only_that_wallet(as_role, books):
    other = books["wallet"]
    client = as_role("support")
    from tests.factories import funded_wallet

    funded_wallet(amount=500)
    ledger = client.get(reverse("admin:billing_ledgerentry_changelist"), {"wallet__id__exact": other.pk})
    assert {entry.wallet_id for entry in ledger.context["cl"].result_list} == {other.pk}
    assert [e.sequence for e in ledger.context["cl"].result_list] == sorted(
        (e.sequence for e in ledger.context["cl"].result_list), reverse=True
    )


def test_a_charge_links_to_its_settlement(as_role, books):
    from iaas.cloud.models import Charge

    charge = Charge.objects.get(subject_id=books["server"].pk)
    assert charge.ledger_entry_id is not None  # ChargeSettled recorded Billing's entry
    client = as_role("support")
    page = client.get(reverse("admin:cloud_charge_change", args=[charge.pk])).content.decode()
    settlement = reverse("admin:billing_settledcharge_change", args=[charge.pk])
    assert f'href="{settlement}"' in page
    settled = client.get(settlement).context["original"]
    assert (settled.amount, settled.ledger_entry_id) == (charge.amount, charge.ledger_entry_id)
    assert settled.ledger_entry.kind == "charge"


def test_amounts_are_shown_as_money(as_role, books):
    page = as_role("support").get(reverse("admin:billing_adjustment_changelist")).content.decode()
    assert "2.50 EUR" in page


def test_outbox_shows_failed_deliveries_with_attempts_and_error(as_role, books):
    response = as_role("support").get(reverse("admin:contracts_outboxmessage_changelist"))
    rows = list(response.context["cl"].result_list)
    assert [row.pk for row in rows] == [books["failed_event"].pk]  # undelivered only, by default
    page = response.content.decode()
    assert "could not obtain lock on row" in page
    assert ">10<" in page  # attempts
