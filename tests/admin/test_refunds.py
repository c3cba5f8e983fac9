"""A Finance operator refunds a settled charge, found on the ledger entry that settled it
(an entry may settle several charges: each is refunded on its own), at most once, at most
its amount, with a reason; Support cannot."""

from __future__ import annotations

from django.urls import reverse

from iaas.billing.models import LedgerEntry, Refund


def refund_page(charge) -> str:
    return reverse("admin:billing_settledcharge_refund", args=[charge.pk])


def entry_page(charge) -> str:
    return reverse("admin:billing_ledgerentry_change", args=[charge.ledger_entry_id])


def test_finance_refunds_part_of_a_charge_from_its_entry(as_role, books):
    charge = books["hosting_charge"]
    client = as_role("finance")
    page = client.get(entry_page(charge)).content.decode()
    assert charge.description in page  # the entry lists the charges it settles ...
    assert refund_page(charge) in page  # ... each with its refund link
    assert (
        refund_page(charge)
        in client.get(reverse("admin:billing_settledcharge_change", args=[charge.pk])).content.decode()
    )
    response = client.post(refund_page(charge), {"amount": "1.50", "reason": "Two days of downtime"})
    assert response.status_code == 302
    refund = Refund.objects.get(charge=charge)
    assert (refund.amount, refund.created_by.get_username()) == (150, "fiona")
    assert refund.ledger_entry.reference == f"refund:{charge.pk}"
    wallet = books["wallet"]
    before = wallet.balance
    wallet.refresh_from_db()
    assert wallet.balance == before + 150
    assert "refunded 1.50 EUR" in client.get(entry_page(charge)).content.decode()


def test_a_refund_over_the_charge_is_refused_on_the_form(as_role, books):
    charge = books["hosting_charge"]
    entries = LedgerEntry.objects.count()
    response = as_role("finance").post(refund_page(charge), {"amount": "4.00", "reason": "too much"})
    assert response.status_code == 200
    assert "exceeds the charge" in response.content.decode()
    assert LedgerEntry.objects.count() == entries


def test_a_refunded_charge_is_not_offered_again(as_role, books):
    refunded = books["refund"].charge
    client = as_role("finance")
    assert refund_page(refunded) not in client.get(entry_page(refunded)).content.decode()
    page = client.get(reverse("admin:billing_settledcharge_change", args=[refunded.pk]))
    assert refund_page(refunded) not in page.content.decode()
    response = client.post(refund_page(refunded), {"reason": "again"})
    assert "refunded already" in response.content.decode()


def test_support_cannot_refund(as_role, books):
    charge = books["hosting_charge"]
    client = as_role("support")
    assert refund_page(charge) not in client.get(entry_page(charge)).content.decode()
    assert client.get(refund_page(charge)).status_code == 403
    assert client.post(refund_page(charge), {"reason": "please"}).status_code == 403
    assert not Refund.objects.filter(charge=charge).exists()
