"""Property-based, stateful: random sequences of top-ups, purchases in both contexts,
releases and event deliveries (some delayed, some failing and retried), with the
invariants I1 to I5 (and I9) checked after every step."""

from __future__ import annotations

import uuid

import pytest
from django.db import transaction
from django.test import override_settings
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from iaas.billing import services as billing
from iaas.billing.models import Wallet
from iaas.cloud import services as cloud
from iaas.common.db import run_after_rollback
from iaas.contracts import bus
from iaas.contracts.errors import InsufficientFunds
from iaas.hosting import services as hosting
from iaas.operations.reconciliation import reconcile
from tests.conftest import install_catalogs
from tests.factories import UserFactory

SERVER_PLANS = ["s-1vcpu-1gb", "s-2vcpu-4gb", "s-8vcpu-16gb", "c-16vcpu-32gb"]
HOSTING_PLANS = ["web-starter", "web-business"]
SETTLE_HANDLER = "billing.settle_charge"


class BillingMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        # Each example runs in a transaction of its own, rolled back at its end.
        self.example = transaction.atomic()
        self.example.__enter__()

    @initialize(
        opening=st.integers(min_value=0, max_value=5_000),
        cloud_chunk=st.sampled_from([0, 50, 1_000]),
        hosting_chunk=st.sampled_from([0, 500, 2_000]),
    )
    def open_wallet(self, opening, cloud_chunk, hosting_chunk):
        install_catalogs()
        self.customer = UserFactory()
        self.wallet = billing.wallet_create(owner_id=self.customer.id, currency="EUR")
        self.topped_up = 0
        self.sold = 0  # sum of prices of purchases that went through
        self.flaky = False
        self.real_settle = bus._handlers_by_name[SETTLE_HANDLER]
        self.reserve_ahead = {"cloud": cloud_chunk, "hosting": hosting_chunk}
        if opening:
            self.top_up(opening)

    def teardown(self):
        if hasattr(self, "real_settle"):
            bus._handlers_by_name[SETTLE_HANDLER] = self.real_settle
        transaction.set_rollback(True)
        self.example.__exit__(None, None, None)

    # --- money in ----------------------------------------------------------------------

    @rule(amount=st.integers(min_value=1, max_value=3_000))
    def top_up(self, amount):
        billing.top_up_create(wallet_id=self.wallet.id, owner_id=self.customer.id, amount=amount)
        self.topped_up += amount

    # --- purchases -----------------------------------------------------------------------

    def _buy(self, purchase, price):
        with override_settings(IAAS_RESERVE_AHEAD=self.reserve_ahead):
            try:
                purchase()
            except InsufficientFunds as refusal:
                run_after_rollback(refusal)  # what the outermost transaction owner does
                return
        self.sold += price

    @rule(plan=st.sampled_from(SERVER_PLANS))
    def buy_server(self, plan):
        from iaas.cloud.models import ServerPlan

        price = ServerPlan.objects.get(pk=plan).price_per_hour
        self._buy(
            lambda: cloud.server_create(
                owner_id=self.customer.id, wallet_id=self.wallet.id, name="vm", plan_id=plan
            ),
            price,
        )

    @rule(plan=st.sampled_from(HOSTING_PLANS))
    def buy_hosting(self, plan):
        from iaas.hosting.models import HostingPlan

        price = HostingPlan.objects.get(pk=plan).price_per_month
        self._buy(
            lambda: hosting.subscription_create(
                owner_id=self.customer.id,
                wallet_id=self.wallet.id,
                domain=f"{uuid.uuid4().hex[:10]}.example",
                plan_id=plan,
            ),
            price,
        )

    @rule(context=st.sampled_from(["cloud", "hosting"]), chunk=st.sampled_from([0, 50, 1_000]))
    def set_reserve_ahead(self, context, chunk):
        self.reserve_ahead[context] = chunk

    @rule(context=st.sampled_from(["cloud", "hosting"]), amount=st.none() | st.integers(1, 500))
    def release(self, context, amount):
        service = cloud if context == "cloud" else hosting
        service.allowance_release(wallet_id=self.wallet.id, reason="test", amount=amount)

    # --- delivery, delayed and failing ------------------------------------------------------

    @rule(limit=st.integers(min_value=1, max_value=5))
    def deliver_some(self, limit):
        bus.deliver_pending(limit=limit)

    @rule(flaky=st.booleans())
    def settlement_handler_flaky(self, flaky):
        self.flaky = flaky

        def failing(event):
            raise ConnectionError("billing handler down")

        bus._handlers_by_name[SETTLE_HANDLER] = failing if flaky else self.real_settle

    @rule()
    def retry_failed_deliveries_now(self):
        bus.retry_failed()

    @precondition(lambda self: not self.flaky)
    @rule()
    def drain(self):
        bus.retry_failed()
        bus.deliver_pending()
        wallet = Wallet.objects.get(pk=self.wallet.id)
        if bus.pending_count() == 0:
            # Everything settled: the balance is what came in minus what was sold.
            assert wallet.balance == self.topped_up - self.sold

    # --- invariants after every step ----------------------------------------------------------

    @invariant()
    def invariants_hold(self):
        if not hasattr(self, "wallet"):
            return
        report = reconcile()
        assert report.ok, report.as_dict()
        wallet = Wallet.objects.get(pk=self.wallet.id)
        assert 0 <= wallet.reserved <= wallet.balance
        assert wallet.balance >= self.topped_up - self.sold  # settled charges never exceed sales


@pytest.mark.django_db
def test_random_sequences_keep_the_invariants():
    run_state_machine_as_test(
        BillingMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
