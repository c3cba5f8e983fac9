"""``manage.py events --list``: every event type, with who receives it."""

from __future__ import annotations

import copy
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from iaas.billing import services as billing
from iaas.contracts import bus, selling
from iaas.contracts.events import WalletToppedUp
from iaas.contracts.models import OutboxMessage
from tests.factories import tell_customer


def listed(*args: str) -> str:
    out = StringIO()
    call_command("events", *args, stdout=out)
    return out.getvalue()


def test_lists_each_event_with_its_handlers_and_their_context():
    lines = [line.split() for line in listed("--list").splitlines()]
    assert lines[0] == ["event", "handler", "context"]
    rows = {(row[0], row[1], row[2]) for row in lines[1:]}
    assert ("ChargesRecorded", "billing.settle_recorded_charges", "billing") in rows
    assert ("ChargeSettled", "cloud.record_settlement", "cloud") in rows
    assert ("ChargeSettled", "hosting.record_settlement", "hosting") in rows
    assert ("FundsReserved", "-", "-") in rows  # published, received by nobody yet
    assert ("WalletToppedUp", "notifications.wallet_topped_up", "notifications") in rows
    assert not any(row[0].startswith("NamedSubscriptions") for row in lines)  # tests' own events


def test_json_says_which_subscriptions_batch_and_which_take_only_some_events():
    rows = json.loads(listed("--json"))
    settled = [r for r in rows if r["event"] == "ChargeSettled"]
    assert {(r["name"], r["batch"], r["conditional"]) for r in settled} == {
        (f"{name}.record_settlement", True, True) for name in selling.names()
    }
    assert {"event": "FundsReserved", "name": None, "context": None} in rows


@pytest.mark.django_db
def test_a_later_subscription_is_fed_the_recorded_events_once(monkeypatch, wallet):
    """Events published while nobody subscribed are recorded; a subscription added later
    takes them through --feed (its condition applies), each once however often it runs."""
    for amount in (100, 200, 300):
        billing.top_up_create(wallet_id=wallet.id, owner_id=wallet.owner_id, amount=amount)  # sandbox: paid
    tell_customer(OutboxMessage.objects.all())  # what they were published to: customers' notifications
    seen = []
    monkeypatch.setattr(bus, "_subscriptions", dict(bus._subscriptions))
    monkeypatch.setattr(bus, "_handlers", copy.deepcopy(bus._handlers))
    monkeypatch.setattr(bus, "_handlers_by_name", dict(bus._handlers_by_name))
    monkeypatch.setattr(bus, "_conditions", dict(bus._conditions))
    bus.subscribe(WalletToppedUp, seen.append, name="tests.top_ups", when=lambda e: e.amount >= 200)
    out = json.loads(fed("tests.top_ups", "--since", "2000-01-01T00:00:00+00:00", "--json"))
    assert out["fed"] == 3  # the wallet's first top-up (100.00), 200 and 300; not 100
    assert bus.deliver_pending().delivered == 3
    assert sorted(event.amount for event in seen) == [200, 300, 10_000]
    assert json.loads(fed("tests.top_ups", "--since", "2000-01-01T00:00:00+00:00", "--json"))["fed"] == 0


@pytest.mark.django_db
def test_feeding_an_unknown_subscription_or_without_since_is_refused():
    with pytest.raises(CommandError, match="no subscription named"):
        fed("tests.nobody", "--since", "2000-01-01")
    with pytest.raises(CommandError, match="--since"):
        fed("billing.apply_release")


def fed(*args: str) -> str:
    out = StringIO()
    call_command("events", "--feed", *args, stdout=out)
    return out.getvalue()
