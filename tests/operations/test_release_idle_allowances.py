"""release_idle_allowances: each selling context gives back allowance it has not used
for a while; Billing learns of it by event; a recently used allowance stays."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from iaas.billing.models import Wallet
from iaas.cloud.models import Allowance as CloudAllowance
from iaas.contracts import bus


@pytest.fixture
def reserve_ahead(settings):
    settings.IAAS_RESERVE_AHEAD = {"cloud": 1_000, "hosting": 0}


def release(*args: str) -> dict:
    out = StringIO()
    call_command("release_idle_allowances", "--json", *args, stdout=out, stderr=StringIO())
    return json.loads(out.getvalue())


def test_idle_allowance_is_released_and_billing_told(
    reserve_ahead, three_wallets, buy_server, clock, assert_invariants
):
    idle, busy, _ = three_wallets
    buy_server(idle)  # reserves 10.00 ahead, spends 0.04: 9.96 left in Cloud's allowance
    clock.shift(dt.timedelta(days=2))
    buy_server(busy)
    bus.deliver_pending()
    assert Wallet.objects.get(pk=idle.id).reserved == 996

    dry = release("--older-than", "1d", "--dry-run")
    assert dry["contexts"]["cloud"] == {"idle": 1, "released": 1, "amounts": {"EUR": 996}}
    assert CloudAllowance.objects.get(pk=idle.id).amount == 996

    summary = release("--older-than", "1d")
    assert summary["contexts"]["cloud"] == {"idle": 1, "released": 1, "amounts": {"EUR": 996}}
    assert summary["contexts"]["hosting"]["idle"] == 0
    assert CloudAllowance.objects.get(pk=idle.id).amount == 0
    assert CloudAllowance.objects.get(pk=busy.id).amount == 996  # used just now: kept
    bus.deliver_pending()
    assert Wallet.objects.get(pk=idle.id).reserved == 0
    assert release("--older-than", "1d")["contexts"]["cloud"]["released"] == 0  # again: nothing
    assert_invariants()


def test_human_summary_and_bad_duration(reserve_ahead, three_wallets, buy_server, clock):
    buy_server(three_wallets[0])
    clock.shift(dt.timedelta(hours=3))
    out = StringIO()
    call_command("release_idle_allowances", "--older-than", "2h", stdout=out)
    assert "cloud    released 1 of 1 idle, 9.96 EUR" in out.getvalue()
    with pytest.raises(CommandError, match="not a duration"):
        call_command("release_idle_allowances", "--older-than", "soon")
