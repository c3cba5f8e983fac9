"""Fixtures for the operations commands' tests."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from iaas.cloud import services as cloud_services
from tests.factories import funded_wallet

NOW = dt.datetime(2026, 5, 10, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def clock():
    """A frozen clock at NOW; ``clock.move_to(...)`` / ``clock.shift(...)`` move it."""
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def buy_server():
    def buy(wallet, name: str = "web1", plan: str = "s-2vcpu-4gb"):
        return cloud_services.server_create(
            owner_id=wallet.owner_id, wallet_id=wallet.id, name=name, plan_id=plan
        )

    return buy


@pytest.fixture
def three_wallets(db):
    return [funded_wallet(amount=10_000) for _ in range(3)]
