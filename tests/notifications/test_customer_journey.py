"""What the contexts really publish reaches the customer as documented: their services'
lives (suspended, a day before the end, ended) and their money (top-ups, the low-balance
threshold, an invoice, a refund, a card payment disputed) arrive at a real receiver on
loopback, signed, each
body's ``data.object`` exactly what the API showed at that moment; and the verified
customer gets an email for each.

With IAAS_WRITE_WEBHOOK_EXAMPLES=1 the bodies are written to docs/webhook-examples.json
(the examples docs/webhooks.md points at); a test checks that file covers every type."""

from __future__ import annotations

import datetime as dt
import json
import os
from io import StringIO
from pathlib import Path

import pytest
import time_machine
from django.core import mail
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from iaas.billing import reversals
from iaas.billing import services as billing_services
from iaas.billing.models import SettledCharge, TopUp
from iaas.contracts import bus
from iaas.notifications import catalog as webhook_catalog
from iaas.notifications import sender, webhooks
from iaas.notifications.models import EmailSettings
from tests.factories import UserFactory, api_key_for, funded_wallet
from tests.notifications.receiver import Receiver, spec_verify
from tests.spending.contexts import CONTEXTS, moment, top_up

pytestmark = pytest.mark.django_db

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "webhook-examples.json"
SCHEDULED = {
    "server": "termination_scheduled",
    "subscription": "cancellation_scheduled",
    "volume": "deletion_scheduled",
}
ENDED = {"server": "terminated", "subscription": "cancelled", "volume": "deleted"}


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def told(customer, receiver):
    """The customer with a verified address and an endpoint for every event type."""
    EmailSettings.objects.create(owner=customer, address="owner@example.com", verified_at=timezone.now())
    return webhooks.endpoint_create(
        owner_id=customer.pk, url=receiver.url, event_types=list(webhook_catalog.NAMES)
    )


def send_at(when: dt.datetime) -> None:
    with time_machine.travel(when, tick=False):
        bus.deliver_pending()
        sender.send_due()


def received(receiver: Receiver, secret: str) -> dict[str, dict]:
    bodies = {}
    for request in receiver.requests:
        assert spec_verify(secret, request)
        body = json.loads(request.body)
        assert body["id"] == request.headers["webhook-id"]
        assert body["type"] not in bodies, body["type"]
        bodies[body["type"]] = body
    return bodies


def keep_examples(bodies: dict[str, dict]) -> None:
    if not os.environ.get("IAAS_WRITE_WEBHOOK_EXAMPLES"):
        return
    examples = json.loads(EXAMPLES.read_text()) if EXAMPLES.exists() else {}
    examples.update(bodies)
    ordered = {name: examples[name] for name in webhook_catalog.NAMES if name in examples}
    EXAMPLES.write_text(json.dumps(ordered, indent=2) + "\n")


@pytest.mark.parametrize("ctx", CONTEXTS, ids=lambda ctx: ctx.name)
def test_a_service_s_life_reaches_its_owner_as_documented(ctx, customer, catalog, receiver, told):
    wallet = funded_wallet(customer, amount=ctx.price)
    service = ctx.buy(wallet)
    ctx.run_batch(ctx.refused)
    send_at(ctx.refused)
    suspended_as_shown = ctx.detail(service, ctx.refused)

    ends = ctx.ends_at(ctx.refused)
    warned = ends - dt.timedelta(hours=23)
    with time_machine.travel(warned, tick=False):
        call_command("warn_service_ends", stdout=StringIO())
    send_at(warned)
    warned_as_shown = ctx.detail(service, warned)

    ctx.run_batch(ends)
    send_at(ends)
    ended_as_shown = ctx.detail(service, ends)

    bodies = received(receiver, told.secret)
    kind = ctx.kind
    assert list(bodies) == [f"{kind}.suspended", f"{kind}.{SCHEDULED[kind]}", f"{kind}.{ENDED[kind]}"]
    suspended = bodies[f"{kind}.suspended"]["data"]
    assert suspended["object"] == suspended_as_shown
    assert (suspended["cause"], suspended["reason"]) == ("unpaid", "unpaid")
    assert moment(suspended["object"][ctx.ends_field]) == ends  # told at once when it ends
    scheduled = bodies[f"{kind}.{SCHEDULED[kind]}"]["data"]
    assert scheduled["object"] == warned_as_shown
    assert moment(scheduled["ends_at"]) == ends
    ended = bodies[f"{kind}.{ENDED[kind]}"]["data"]
    assert ended["object"] == ended_as_shown
    assert ended["reason"] == "unpaid"

    subjects = [email.subject for email in mail.outbox]
    assert len(subjects) == 3, subjects  # suspended, a day before the end, ended
    assert "suspended" in subjects[0]
    assert all(email.to == ["owner@example.com"] for email in mail.outbox)
    assert all(email.alternatives[0][1] == "text/html" for email in mail.outbox)
    keep_examples(bodies)


@pytest.mark.parametrize("ctx", CONTEXTS, ids=lambda ctx: ctx.name)
def test_a_service_that_runs_again_is_told_with_what_its_wallet_paid(ctx, customer, catalog, receiver, told):
    wallet = funded_wallet(customer, amount=ctx.price)
    service = ctx.buy(wallet)
    ctx.run_batch(ctx.refused)
    paid = ctx.refused + dt.timedelta(hours=3)
    with time_machine.travel(paid - dt.timedelta(hours=1), tick=False):
        top_up(wallet)
    ctx.run_batch(paid)
    send_at(paid)

    bodies = received(receiver, told.secret)
    # (The wallet's first top-up is due at the real time of the test, after these moments.)
    assert set(bodies) == {f"{ctx.kind}.suspended", "top_up.succeeded", f"{ctx.kind}.resumed"}
    resumed = bodies[f"{ctx.kind}.resumed"]["data"]["object"]
    assert resumed == ctx.detail(service, paid)
    assert (resumed["status"], resumed["suspension_causes"], resumed[ctx.ends_field]) == ("active", [], None)
    keep_examples({f"{ctx.kind}.resumed": bodies[f"{ctx.kind}.resumed"]})


@override_settings(IAAS_MAX_TOP_UP=100_000_000)
def test_the_customer_hears_about_their_money_as_documented(customer, catalog, receiver, told, api):
    wallet = funded_wallet(customer, amount=1_000)
    send_at(timezone.now())

    # The threshold: one notice when the available balance goes below it.
    response = api.patch(f"/api/v1/wallets/{wallet.id}/", {"low_balance_threshold": 998}, format="json")
    assert response.status_code == 200
    server = api.post(
        "/api/v1/cloud/servers/",
        {"name": "web-1", "plan": "s-2vcpu-4gb", "wallet": str(wallet.id)},
        format="json",
    )
    assert server.status_code == 201
    wallet_as_shown_then = api.get(f"/api/v1/wallets/{wallet.id}/").json()
    api.post(
        "/api/v1/cloud/servers/",
        {"name": "web-2", "plan": "s-2vcpu-4gb", "wallet": str(wallet.id)},
        format="json",
    )  # still below: no second notice
    send_at(timezone.now())

    # A refund of the first hour.
    charge = SettledCharge.objects.filter(wallet_id=wallet.id).first()
    refund = billing_services.charge_refund(
        charge_id=charge.pk, reason="Never booted", operator_id=UserFactory().pk
    )
    # A top-up the provider gives up on.
    with override_settings(IAAS_PAYMENT_PROVIDER="iaas.billing.payments.ManualPaymentProvider"):
        pending = billing_services.top_up_create(wallet_id=wallet.id, owner_id=customer.pk, amount=5_000)
    billing_services.top_up_fail(top_up_id=pending.id, reason="expired")
    # The month's invoice.
    now = timezone.now()
    month_end = (now.replace(day=1) + dt.timedelta(days=32)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    with time_machine.travel(month_end + dt.timedelta(hours=3), tick=False):
        call_command("issue_invoices", stdout=StringIO())
    send_at(month_end + dt.timedelta(hours=3))

    bodies = received(receiver, told.secret)
    assert set(bodies) == {
        "top_up.succeeded",
        "wallet.low_balance",
        "refund.created",
        "top_up.failed",
        "invoice.issued",
    }
    topped_up = bodies["top_up.succeeded"]["data"]["object"]
    assert (topped_up["amount"], topped_up["status"]) == (1_000, "succeeded")
    low = bodies["wallet.low_balance"]["data"]
    assert (low["threshold"], low["currency"]) == (998, "EUR")
    assert low["available"] < 998 <= low["available"] + 4
    assert low["object"]["id"] == str(wallet.id)
    assert low["object"]["available"] == low["available"]
    assert low["object"]["low_balance_threshold"] == wallet_as_shown_then["low_balance_threshold"] == 998
    assert bodies["refund.created"]["data"]["object"]["id"] == str(refund.id)
    failed = bodies["top_up.failed"]["data"]
    assert (failed["object"]["id"], failed["object"]["status"], failed["reason"]) == (
        str(pending.id),
        "failed",
        "expired",
    )
    invoice = bodies["invoice.issued"]["data"]["object"]
    key = api_key_for(customer)
    shown = api.get(f"/api/v1/invoices/{invoice['id']}/", HTTP_AUTHORIZATION=f"Token {key}").json()
    assert invoice == shown

    subjects = [email.subject for email in mail.outbox]
    assert len(subjects) == 5, subjects  # the top-up, low balance, the refund, the failed top-up, the invoice
    keep_examples(bodies)


def test_a_disputed_top_up_reaches_its_owner_as_documented(customer, catalog, receiver, told, api):
    """The card's bank takes a top-up back after some of it was spent: what the wallet
    still had available is taken, the rest is owed, and the wallet is being frozen."""
    wallet = funded_wallet(customer, amount=5_000)
    top_up = TopUp.objects.get(wallet=wallet)
    server = api.post(
        "/api/v1/cloud/servers/",
        {"name": "web-1", "plan": "s-2vcpu-4gb", "wallet": str(wallet.id)},
        format="json",
    )
    assert server.status_code == 201
    available = api.get(f"/api/v1/wallets/{wallet.id}/").json()["available"]
    assert 0 < available < 5_000

    applied = reversals.reversal_apply(top_up_id=top_up.id, kind="dispute", reference="dp_test", amount=5_000)
    assert applied.created
    top_up_as_shown = api.get(f"/api/v1/wallets/{wallet.id}/top-ups/{top_up.id}/").json()
    send_at(timezone.now())

    bodies = received(receiver, told.secret)
    assert set(bodies) == {"top_up.succeeded", "top_up.reversed"}
    reversal = bodies["top_up.reversed"]["data"]
    assert reversal["object"] == top_up_as_shown
    assert (reversal["object"]["id"], reversal["object"]["status"]) == (str(top_up.id), "succeeded")
    assert (reversal["kind"], reversal["amount"], reversal["currency"]) == ("dispute", 5_000, "EUR")
    assert (reversal["taken"], reversal["debt_added"]) == (available, 5_000 - available)
    assert reversal["frozen"] is True
    shown = api.get(f"/api/v1/wallets/{wallet.id}/").json()
    assert (shown["available"], shown["debt"]) == (0, reversal["debt_added"])

    subjects = [email.subject for email in mail.outbox]
    assert "Your card payment of 50.00 EUR was disputed: your wallet is frozen" in subjects
    keep_examples({"top_up.reversed": bodies["top_up.reversed"]})


def test_the_documented_examples_cover_every_event_type():
    examples = json.loads(EXAMPLES.read_text())
    assert list(examples) == list(webhook_catalog.NAMES)
    for name, body in examples.items():
        assert body["type"] == name
        assert set(body) == {"id", "type", "created_at", "data"}
        assert "object" in body["data"]
