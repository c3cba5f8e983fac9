"""``manage.py events --list``: every event type, with who receives it."""

from __future__ import annotations

import json
from io import StringIO

from django.core.management import call_command


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
    assert ("WalletToppedUp", "-", "-") in rows  # published, received by nobody yet
    assert not any(row[0].startswith("NamedSubscriptions") for row in lines)  # tests' own events


def test_json_says_which_subscriptions_batch_and_which_take_only_some_events():
    rows = json.loads(listed("--json"))
    settled = [r for r in rows if r["event"] == "ChargeSettled"]
    assert {(r["name"], r["batch"], r["conditional"]) for r in settled} == {
        ("cloud.record_settlement", True, True),
        ("hosting.record_settlement", True, True),
    }
    assert {"event": "InvoiceIssued", "name": None, "context": None} in rows
