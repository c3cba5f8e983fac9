"""What the tests of the selling contexts' batch commands (bill_usage,
renew_subscriptions) share: moments in UTC, a run at a moment with the clock stopped,
and the charges recorded for a server or a subscription."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import time_machine
from django.core.management import call_command

from iaas.contracts import bus


def at(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def run_at(moment: dt.datetime, command: str, *args: str) -> dict:
    """Run ``command --json`` at ``moment`` (the clock stopped), then the settlement run
    (usage due is closed into charges: with the tests' cadence of 0, all of it), deliver
    the events they published, and return the command's JSON summary."""
    out = StringIO()
    with time_machine.travel(moment, tick=False):
        call_command(command, "--json", *args, stdout=out, stderr=StringIO())
        call_command("settle_usage", stdout=StringIO())
        bus.deliver_pending()
    return json.loads(out.getvalue())


def charges_for(charge_model, subject) -> list[tuple[dt.datetime, dt.datetime, int]]:
    """(period start, period end, amount) of each charge for ``subject``, oldest first."""
    return list(
        charge_model.objects.filter(subject_id=subject.id)
        .order_by("period_start")
        .values_list("period_start", "period_end", "amount")
    )
