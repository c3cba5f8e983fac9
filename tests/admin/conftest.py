"""Fixtures for the operator console: the operator roles, a logged-in client per role
(superuser and Finance with a verified second factor, as the admin requires), and a
customer whose money has gone everywhere (top-up, server, subscription, settled charges,
a release, an adjustment, a failed event delivery), so that every admin page has a row
to show."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from iaas.billing import services as billing_services
from iaas.billing.models import SettledCharge
from iaas.cloud import services as cloud_services
from iaas.common.admin import OPERATION_TOKEN
from iaas.contracts import bus
from iaas.contracts.events import ReleaseRequested
from iaas.contracts.models import InboxRecord, OutboxMessage
from iaas.hosting import services as hosting_services
from iaas.operations.roles import FINANCE, SUPPORT, install_operator_groups
from tests.admin.payment_rows import payment_rows
from tests.factories import UserFactory, funded_wallet

PASSWORD = "operator-test-password"


class OperatorClient(Client):
    """The test client as a browser posting a page it has just rendered: each POST
    carries a fresh one-time token, unless the test names one (the tests of the tokens
    resubmit one, or send none)."""

    def post(self, path, data=None, *args, **kwargs):
        if isinstance(data, dict) and OPERATION_TOKEN not in data:
            data = {**data, OPERATION_TOKEN: str(uuid.uuid4())}
        return super().post(path, data, *args, **kwargs)


@pytest.fixture
def client():
    return OperatorClient()


@pytest.fixture
def operator_groups(db):
    """The groups come from a data migration, which a transactional test's flush erases:
    install them again (idempotent)."""
    install_operator_groups()


def make_operator(username: str, *, group: str | None = None, superuser: bool = False):
    user = get_user_model().objects.create_user(
        username=username,
        email=f"{username}@operators.example",
        password=PASSWORD,
        is_staff=True,
        is_superuser=superuser,
    )
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


def enrol_authenticator(user) -> TOTPDevice:
    """A confirmed authenticator app, as the set-up page leaves it."""
    return TOTPDevice.objects.create(user=user, name="authenticator app", confirmed=True)


def login_with_second_factor(client, user):
    """Log the test client in as an operator who passed both factors: the password
    (force_login) and their authenticator (the session django_otp.login writes)."""
    client.force_login(user)
    device = TOTPDevice.objects.get(user=user, confirmed=True)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


@pytest.fixture
def superuser(operator_groups):
    user = make_operator("root", superuser=True)
    enrol_authenticator(user)
    return user


@pytest.fixture
def finance(operator_groups):
    user = make_operator("fiona", group=FINANCE)
    enrol_authenticator(user)
    return user


@pytest.fixture
def support(operator_groups):
    return make_operator("sam", group=SUPPORT)


@pytest.fixture
def as_role(client, superuser, finance, support):
    """``as_role("support")``: the test client, logged in as that operator (with their
    second factor where they have one; Support has none and needs none)."""
    users = {"superuser": superuser, "finance": finance, "support": support}

    def login(role: str):
        if role == "support":
            client.force_login(users[role])
            return client
        return login_with_second_factor(client, users[role])

    return login


@pytest.fixture
def alice(db):
    return UserFactory(username="alice", email="alice@customers.example")


@pytest.fixture
def books(catalog, alice, superuser, settings, deliver):
    """Alice's EUR wallet (100.00 EUR topped up), a server and a hosting subscription bought
    with both contexts reserving 5.00 EUR ahead (so they hold allowances: reserved > 0),
    part of each released, every charge and release settled, a credit adjustment, one
    event delivery that failed, and card payments (tests/admin/payment_rows.py)."""
    settings.IAAS_RESERVE_AHEAD = {"cloud": 500, "hosting": 500}
    wallet = funded_wallet(alice, amount=10_000)
    server = cloud_services.server_create(
        owner_id=alice.id, wallet_id=wallet.id, name="web-1", plan_id="s-1vcpu-1gb"
    )
    subscription = hosting_services.subscription_create(
        owner_id=alice.id, wallet_id=wallet.id, domain="alice-shop.example", plan_id="web-starter"
    )
    cloud_services.allowance_release(wallet_id=wallet.id, reason="idle", amount=100)
    hosting_services.allowance_release(wallet_id=wallet.id, reason="idle", amount=100)
    deliver()
    billing_services.wallet_adjust(
        wallet_id=wallet.id, amount=250, reason="Goodwill credit", operator_id=superuser.id
    )
    with transaction.atomic():
        bus.publish(ReleaseRequested(wallet_id=wallet.id, requested_by="billing"))
    # Cloud's answer fails: Cloud keeps its allowance until an operator retries.
    failed = OutboxMessage.objects.get(status=OutboxMessage.Status.PENDING, handler__startswith="cloud.")
    OutboxMessage.objects.filter(pk=failed.pk).update(
        status=OutboxMessage.Status.FAILED,
        attempts=10,
        last_error="OperationalError: could not obtain lock on row",
    )
    deliver()
    # A consumer outside the money transaction applied an event (its inbox record).
    InboxRecord.objects.create(consumer="tests.consumer", event_id=failed.event_id)
    wallet.refresh_from_db()
    assert wallet.reserved > 0
    invoice = invoice_this_month(wallet)
    server_charge = SettledCharge.objects.get(wallet=wallet, context="cloud")
    refund = billing_services.charge_refund(
        charge_id=server_charge.pk, reason="Server never booted", operator_id=superuser.id
    )
    payments = payment_rows(wallet)  # a card top-up partly refunded, a parked payment...
    deliver()  # the contexts note the refund on their charge (ChargeRefunded)
    wallet.refresh_from_db()
    return {
        "wallet": wallet,
        "server": server,
        "subscription": subscription,
        "failed_event": failed,
        "invoice": invoice,
        "refund": refund,
        "hosting_charge": SettledCharge.objects.get(wallet=wallet, context="hosting"),
        "payments": payments,
    }


def invoice_this_month(wallet):
    """Issue this month's invoice as the run on the 1st of next month would."""
    import datetime as dt

    import time_machine
    from django.utils import timezone

    from iaas.billing.invoicing import invoice_issue
    from iaas.common.periods import Month
    from iaas.contracts import bus

    now = timezone.now()
    month = Month(now.year, now.month)
    with time_machine.travel(month.end + dt.timedelta(hours=1), tick=False):
        invoice = invoice_issue(wallet_id=wallet.id, period=month)
        bus.deliver_pending()  # InvoiceIssued, to the customer's notifications (due then)
    assert invoice is not None
    return invoice
