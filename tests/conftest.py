"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest
from django.apps import apps

from iaas.contracts import bus
from iaas.operations.reconciliation import reconcile
from iaas.spending.apps import selling_context_configs
from tests.cache import clear_cache
from tests.factories import UserFactory, funded_wallet


def install_catalogs() -> None:
    """The catalogs come from data migrations, which a transactional test's flush
    erases: install them again (idempotent)."""
    for config in selling_context_configs():
        config.install_catalog(apps)


@pytest.fixture(scope="session", autouse=True)
def _fresh_cache():
    """No throttle count from an earlier run of this test database (whose customer ids
    start again at 1) reaches this one. Needs Redis: without it the suite fails."""
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def catalog(db):
    install_catalogs()


@pytest.fixture
def customer(db):
    return UserFactory()


@pytest.fixture
def other_customer(db):
    return UserFactory()


@pytest.fixture
def wallet(customer):
    """The customer's EUR wallet with 100.00 EUR."""
    return funded_wallet(customer, amount=10_000)


@pytest.fixture
def deliver():
    """Deliver every pending event now (what deliver_events does)."""
    return bus.deliver_pending


@pytest.fixture
def published(monkeypatch):
    """Every event published while the test runs, in order (they still reach the outbox):
    some have no subscriber, so the outbox alone would not show them."""
    events = []
    publish = bus.publish

    def spy(*new, **together):
        events.extend(new)
        return publish(*new, **together)

    monkeypatch.setattr(bus, "publish", spy)
    return events


@pytest.fixture
def assert_invariants():
    def check():
        report = reconcile()
        assert report.ok, report.as_dict()
        return report

    return check
