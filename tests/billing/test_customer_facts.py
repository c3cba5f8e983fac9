"""Billing's events carry what a customer is told (iaas.notifications subscribes to events
only): whose the thing is, and the thing as the API shows it at that moment. Published
in the transaction that makes them true, so a rolled-back change tells nobody."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.db import transaction

from iaas.billing import services
from iaas.billing.models import Invoice, SettledCharge, TopUp
from iaas.contracts.errors import InvalidState
from iaas.contracts.events import ChargeRefunded, InvoiceIssued, TopUpFailed, WalletToppedUp
from iaas.contracts.models import OutboxMessage
from iaas.hosting import services as hosting
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

MANUAL = "iaas.billing.payments.ManualPaymentProvider"


def of_type(published, event_type) -> list:
    return [event for event in published if isinstance(event, event_type)]


@pytest.fixture
def operator(db):
    return UserFactory(username="fin", is_staff=True)


@pytest.fixture
def pending(customer, settings):
    """A top-up of 25.00 EUR through a provider that confirms later."""
    settings.IAAS_PAYMENT_PROVIDER = MANUAL
    wallet = services.wallet_create(owner_id=customer.id, currency="EUR")
    return services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=2_500)


# --- Top-ups -----------------------------------------------------------------------------------


def top_up_shown(top_up_id, **expected) -> dict:
    """The top-up as the API shows it, from its row as it is now (``expected`` are the
    fields a test states itself)."""
    row = TopUp.objects.get(pk=top_up_id)
    return {
        "id": str(row.id),
        "wallet": str(row.wallet_id),
        "created_at": row.created_at.isoformat().replace("+00:00", "Z"),
        "completed_at": row.completed_at.isoformat().replace("+00:00", "Z"),
        "provider_reference": row.provider_reference,
        "origin": "customer",
        "payment_method": None,
        "failed_attempts": 0,
        "failure_code": "",
        "failure_message": "",
        "debt_paid": 0,
        **expected,
    }


def test_a_top_up_tells_its_owner_and_shows_the_succeeded_top_up(customer, published):
    wallet = services.wallet_create(owner_id=customer.id, currency="EUR")
    top_up = services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=300)
    [told] = of_type(published, WalletToppedUp)
    assert (told.top_up_id, told.wallet_id, told.owner_id) == (top_up.id, wallet.id, customer.id)
    assert told.resource == top_up_shown(
        top_up.id, amount=300, currency="EUR", status="succeeded", provider="sandbox"
    )


def test_a_top_up_confirmed_later_shows_it_succeeded(pending, customer, published):
    assert of_type(published, WalletToppedUp) == []
    services.top_up_confirm(top_up_id=pending.id)
    services.top_up_confirm(top_up_id=pending.id)  # confirmed once: told once
    [told] = of_type(published, WalletToppedUp)
    assert told.owner_id == customer.id
    assert told.resource == top_up_shown(
        pending.id, amount=2_500, currency="EUR", status="succeeded", provider="manual"
    )


def test_a_failed_top_up_is_told_once_with_its_reason(pending, customer, published):
    services.top_up_fail(top_up_id=pending.id, reason="expired")
    services.top_up_fail(top_up_id=pending.id, reason="expired")  # failed already: nothing new
    [told] = of_type(published, TopUpFailed)
    assert (told.top_up_id, told.wallet_id, told.owner_id) == (pending.id, pending.wallet_id, customer.id)
    assert (told.amount, told.currency, told.reason) == (2_500, "EUR", "expired")
    assert told.resource == top_up_shown(
        pending.id, amount=2_500, currency="EUR", status="failed", provider="manual"
    )
    assert TopUp.objects.get(pk=pending.id).status == "failed"


def test_a_failure_that_rolls_back_tells_nobody(pending):
    def fail_then_roll_back():
        with transaction.atomic():
            services.top_up_fail(top_up_id=pending.id)
            raise RuntimeError("the operator's transaction fails after")

    with pytest.raises(RuntimeError):
        fail_then_roll_back()
    assert not OutboxMessage.objects.filter(event_type="TopUpFailed").exists()
    assert TopUp.objects.get(pk=pending.id).status == "pending"


def test_a_succeeded_top_up_cannot_fail_and_tells_nothing(customer, published):
    wallet = services.wallet_create(owner_id=customer.id, currency="EUR")
    top_up = services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=300)
    with pytest.raises(InvalidState):
        services.top_up_fail(top_up_id=top_up.id)
    assert of_type(published, TopUpFailed) == []


# --- Refunds ---------------------------------------------------------------------------------------


def test_a_refund_tells_the_charges_owner_and_shows_the_refund(
    catalog, customer, wallet, operator, deliver, published
):
    hosting.subscription_create(
        owner_id=customer.id, wallet_id=wallet.id, domain="r.example", plan_id="web-starter"
    )
    deliver()
    charge = SettledCharge.objects.get(wallet=wallet)
    refund = services.charge_refund(
        charge_id=charge.pk, reason="site never worked", operator_id=operator.id, amount=100
    )
    [told] = of_type(published, ChargeRefunded)
    assert (told.refund_id, told.owner_id, told.amount) == (refund.id, customer.id, 100)
    assert told.resource == {
        "id": str(refund.id),
        "wallet": str(wallet.id),
        "charge": str(charge.charge_id),
        "context": "hosting",
        "amount": 100,
        "currency": "EUR",
        "reason": "site never worked",
        "created_at": refund.created_at.isoformat().replace("+00:00", "Z"),
    }


# --- Invoices ----------------------------------------------------------------------------------------


def test_an_issued_invoice_shows_the_invoice_with_its_lines(catalog, customer, wallet, deliver, published):
    with time_machine.travel(dt.datetime(2026, 5, 10, 10, tzinfo=dt.UTC), tick=False):
        hosting.subscription_create(
            owner_id=customer.id, wallet_id=wallet.id, domain="i.example", plan_id="web-starter"
        )
        deliver()
    with time_machine.travel(dt.datetime(2026, 6, 1, 1, tzinfo=dt.UTC), tick=False):
        call_command("issue_invoices", "--period", "2026-05", stdout=StringIO(), stderr=StringIO())
    invoice = Invoice.objects.get()
    charge = SettledCharge.objects.get(wallet=wallet)
    [told] = of_type(published, InvoiceIssued)
    assert (told.invoice_id, told.owner_id, told.total) == (invoice.id, customer.id, charge.amount)
    resource = told.resource
    assert (resource["id"], resource["number"], resource["total"]) == (str(invoice.id), invoice.number, 399)
    [line] = resource["lines"]
    assert (line["context"], line["amount"], line["charges"]) == ("hosting", 399, [str(charge.charge_id)])
