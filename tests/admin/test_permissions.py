"""Roles are enforced on the server, and money cannot be edited or deleted by anyone."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from iaas.billing.models import Adjustment, Hold, LedgerEntry, Reservation, TopUp, Wallet
from iaas.cloud import models as cloud
from iaas.contracts.models import OutboxMessage
from iaas.hosting import models as hosting

MONEY_MODELS = [
    Wallet,
    LedgerEntry,
    Hold,
    Reservation,
    TopUp,
    Adjustment,
    cloud.Allowance,
    cloud.Charge,
    cloud.Release,
    hosting.Allowance,
    hosting.Charge,
    hosting.Release,
]
READ_ONLY_MODELS = [*MONEY_MODELS, cloud.Server, hosting.Subscription, OutboxMessage]


def url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def snapshot(wallet):
    wallet.refresh_from_db()
    return (
        wallet.balance,
        wallet.reserved,
        LedgerEntry.objects.count(),
        Adjustment.objects.count(),
        list(OutboxMessage.objects.order_by("id").values_list("id", "status", "attempts")),
    )


@pytest.mark.parametrize("model", READ_ONLY_MODELS, ids=lambda model: model._meta.label)
def test_no_one_edits_adds_or_deletes_money(as_role, books, model):
    client = as_role("superuser")
    obj = model.objects.first()
    change = url(model, "change", obj.pk)

    form = client.get(change).context["adminform"].form
    assert list(form.fields) == []  # everything is shown read-only

    before = list(model.objects.order_by("pk").values())
    field = "amount" if hasattr(obj, "amount") else "status"
    assert client.post(change, {field: "1", "status": "terminated"}).status_code == 403
    assert client.get(url(model, "delete", obj.pk)).status_code == 403
    assert client.post(url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    assert client.get(url(model, "add")).status_code == 403
    assert "delete_selected" not in admin.site._registry[model].get_actions(client.get(change).wsgi_request)
    assert (
        client.post(
            url(model, "changelist"),
            {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"},
        ).status_code
        == 403
    )
    assert list(model.objects.order_by("pk").values()) == before


@pytest.mark.parametrize("model", [cloud.ServerPlan, hosting.HostingPlan], ids=lambda m: m._meta.label)
def test_catalog_plans_are_retired_not_deleted(as_role, books, model):
    plan = model.objects.first()
    assert as_role("superuser").get(url(model, "delete", plan.pk)).status_code == 403
    assert as_role("support").post(url(model, "change", plan.pk), {"name": "x"}).status_code == 403


def test_support_cannot_adjust(as_role, books):
    wallet = books["wallet"]
    before = snapshot(wallet)
    client = as_role("support")
    adjust = reverse("admin:billing_wallet_adjust", args=[wallet.pk])

    assert client.get(adjust).status_code == 403
    response = client.post(adjust, {"direction": "credit", "amount": "10.00", "reason": "please"})
    assert response.status_code == 403
    response = client.post(
        reverse("admin:billing_wallet_changelist"),
        {"action": "adjust_balance", "_selected_action": [wallet.pk], "index": 0},
    )
    assert response.status_code == 403
    assert "Adjust balance" not in client.get(url(Wallet, "change", wallet.pk)).content.decode()
    assert snapshot(wallet) == before


def test_support_cannot_retry_deliveries(as_role, books):
    failed = books["failed_event"]
    before = snapshot(books["wallet"])
    response = as_role("support").post(
        reverse("admin:contracts_outboxmessage_changelist"),
        {"action": "retry_deliveries", "_selected_action": [failed.pk], "index": 0},
    )
    assert response.status_code == 403
    assert snapshot(books["wallet"]) == before


def test_finance_can_retry_a_failed_delivery(as_role, books):
    failed = books["failed_event"]
    wallet = books["wallet"]
    response = as_role("finance").post(
        reverse("admin:contracts_outboxmessage_changelist"),
        {"action": "retry_deliveries", "_selected_action": [failed.pk], "index": 0},
        follow=True,
    )
    assert response.status_code == 200
    assert "1 delivered, 0 failed again" in response.content.decode()
    failed.refresh_from_db()
    assert failed.status == OutboxMessage.Status.DONE
    assert failed.attempts == 11
    # Cloud answered the release request: its allowance is released.
    assert cloud.Allowance.objects.get(pk=wallet.pk).amount == 0


def test_finance_can_open_the_adjustment_form(as_role, books):
    wallet = books["wallet"]
    client = as_role("finance")
    page = client.get(url(Wallet, "change", wallet.pk)).content.decode()
    adjust = reverse("admin:billing_wallet_adjust", args=[wallet.pk])
    assert f'href="{adjust}"' in page
    assert client.get(adjust).status_code == 200
    response = client.post(
        reverse("admin:billing_wallet_changelist"),
        {"action": "adjust_balance", "_selected_action": [wallet.pk], "index": 0},
    )
    assert response.status_code == 302
    assert response["Location"] == adjust


@pytest.mark.parametrize("role", ["finance", "support"])
@pytest.mark.parametrize(
    ("model", "action"),
    [
        (cloud.Server, "suspend_services"),
        (cloud.Server, "end_services"),
        (hosting.Subscription, "end_services"),
        (Wallet, "freeze_wallets"),
        (TopUp, "confirm_top_ups"),
    ],
)
def test_operations_beyond_the_roles_are_refused(as_role, books, role, model, action):
    obj = model.objects.first()
    before = list(model.objects.order_by("pk").values())
    response = as_role(role).post(
        url(model, "changelist"), {"action": action, "_selected_action": [obj.pk], "confirmed": "yes"}
    )
    assert response.status_code == 403
    assert list(model.objects.order_by("pk").values()) == before
