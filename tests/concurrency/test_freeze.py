"""A frozen wallet stops spending at once, the allowance reserved before the freeze
included (ARCHITECTURE.md): real threads, real row locks.

Each test starts from an allowance that already covers the price (a reserve-ahead
chunk), so only the allowance's block, not reserve()'s status check, can stop the
purchase."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from iaas.cloud import services as cloud
from iaas.cloud.models import Allowance, Server
from iaas.contracts import bus, wallets
from iaas.contracts.errors import WalletNotActive
from iaas.operations import wallet_status
from tests.factories import funded_wallet
from tests.threads import run_at_once

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def wallet_with_allowance(settings, catalog, customer):
    settings.IAAS_RESERVE_AHEAD = {**settings.IAAS_RESERVE_AHEAD, "cloud": 1_000}
    wallet = funded_wallet(customer, amount=10_000)
    cloud.server_create(owner_id=customer.id, wallet_id=wallet.id, name="first", plan_id="s-2vcpu-4gb")
    bus.deliver_pending()
    assert Allowance.objects.get(pk=wallet.id).amount >= 4  # the next hour fits without reserving
    return wallet


def buy(wallet):
    return lambda: cloud.server_create(
        owner_id=wallet.owner_id, wallet_id=wallet.id, name=f"s-{uuid.uuid4().hex[:8]}", plan_id="s-2vcpu-4gb"
    )


def test_a_purchase_arriving_while_the_freeze_runs_is_refused(wallet_with_allowance, monkeypatch):
    """The freeze has blocked the allowance and not yet committed when the purchase
    comes: the purchase waits on the allowance row, then sees the block."""
    wallet = wallet_with_allowance
    blocked, purchase_started = threading.Event(), threading.Event()
    block = wallet_status.selling.contexts

    def contexts_then_signal():
        class Signalling:
            def __init__(self, context):
                self.context = context

            def set_allowance_blocked(self, **kwargs):
                self.context.set_allowance_blocked(**kwargs)
                blocked.set()
                purchase_started.wait(10)
                time.sleep(0.3)  # the purchase is now waiting on the allowance row

        return [Signalling(context) for context in block()]

    monkeypatch.setattr(wallet_status.selling, "contexts", contexts_then_signal)

    def purchase():
        blocked.wait(10)
        purchase_started.set()
        return buy(wallet)()

    freeze, bought = run_at_once(
        lambda: wallets.change_status(wallet_id=wallet.id, status="frozen"),
        purchase,
    )
    assert freeze.error is None, freeze.error
    assert isinstance(bought.error, WalletNotActive), bought.error or bought.value
    assert Server.objects.filter(wallet_id=wallet.id).count() == 1


@pytest.mark.parametrize("round_", range(10))
def test_a_purchase_racing_a_freeze_either_commits_before_it_or_is_refused(
    wallet_with_allowance, assert_invariants, round_
):
    wallet = wallet_with_allowance
    freeze, bought = run_at_once(
        lambda: wallets.change_status(wallet_id=wallet.id, status="frozen"), buy(wallet)
    )
    assert freeze.error is None, freeze.error
    assert bought.error is None or isinstance(bought.error, WalletNotActive), bought.error
    # Whatever the order was, nothing is spent once the freeze has committed.
    with pytest.raises(WalletNotActive):
        buy(wallet)()
    bus.deliver_pending()
    assert_invariants()
