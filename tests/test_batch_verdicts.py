"""How a batch applies its wallets' verdicts (iaas.spending.batch.apply_payment), without
a database: what the run's last pass must still try."""

from __future__ import annotations

import datetime as dt
import uuid

from iaas.cloud.models import Server
from iaas.cloud.spending import servers
from iaas.spending.batch import BatchPayment, BatchReport, Step, apply_payment

NOW = dt.datetime(2026, 5, 10, 12, tzinfo=dt.UTC)


def test_a_suspended_server_of_a_busy_wallet_is_left_for_the_last_pass():
    """Its wallet was locked elsewhere: nothing was decided, so the run's last pass must
    try it again (only servers actually tried are skipped there)."""
    wallet = uuid.uuid4()
    server = Server(id=uuid.uuid4(), wallet_id=wallet, owner_id=1, status="suspended", unpaid_since=NOW)
    step = Step(server, amount=4, currency="EUR", units=1, resumes=True, detail=([], NOW))
    report = BatchReport()
    moved, changed, events, history = apply_payment(
        [step],
        BatchPayment(deferred={wallet}),
        now=NOW,
        grace=dt.timedelta(days=7),
        life=servers.life,
        paid=lambda step: None,
        report=report,
    )
    assert report.actions["busy"] == 1
    assert report.deferred_wallets == {wallet}
    assert server.pk not in report.tried_suspended
    assert (moved, changed, events, history) == ([], [], [], [])
