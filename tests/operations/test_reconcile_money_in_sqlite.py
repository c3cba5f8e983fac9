"""I12 on the embedded SQLite database (the default without DATABASE_URL): card money taken
back with a debt left, the debt paid by the next top-up, reconciled clean; then drift
planted with raw SQL is reported under I12 alone, not a crash and not a silent ok. Run as
an operator would, in subprocesses against a SQLite file (tests/operations/
test_reconcile_sqlite.py says why)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from iaas.common.cli import EXIT_OK, EXIT_PROBLEMS
from tests.operations.test_reconcile_sqlite import SEED, failing, manage, must, reconcile

# On SEED's wallet (10.00 + 5.00 EUR): a server's first hour (0.04) settled, both top-ups
# refunded by the card provider (15.00: 14.96 taken, 0.04 left as debt), then a 1.00
# top-up that pays the debt first.
REFUNDED_AND_PAID = """
from iaas.billing import reversals, services
from iaas.billing.models import TopUp, Wallet
from iaas.cloud import services as cloud
from iaas.contracts import bus
wallet = Wallet.objects.get()
cloud.server_create(owner_id=wallet.owner_id, wallet_id=wallet.id, name="web", plan_id="s-2vcpu-4gb")
bus.deliver_pending()
for n, top_up in enumerate(TopUp.objects.order_by("created_at")):
    reversals.reversal_apply(top_up_id=top_up.id, kind="refund", reference=f"re_{n}", amount=top_up.amount)
paying = services.top_up_create(wallet_id=wallet.id, owner_id=wallet.owner_id, amount=100)
wallet.refresh_from_db()
assert (wallet.balance, wallet.debt, paying.debt_paid) == (96, 0, 4), (wallet.balance, wallet.debt)
"""


def plant(database: Path, statement: str) -> None:
    must(
        manage(
            database,
            "shell",
            "-c",
            f"from django.db import connection; connection.cursor().execute({statement!r})",
        )
    )


@pytest.fixture(scope="module")
def refunded(tmp_path_factory) -> Path:
    database = tmp_path_factory.mktemp("sqlite-money-in") / "refunded.sqlite3"
    must(manage(database, "migrate", "--no-input", "-v0"))
    must(manage(database, "shell", "-c", SEED))
    must(manage(database, "shell", "-c", REFUNDED_AND_PAID))
    return database


@pytest.fixture
def database(refunded, tmp_path) -> Path:
    copy = tmp_path / "db.sqlite3"
    shutil.copyfile(refunded, copy)
    return copy


def test_refunds_and_a_debt_paid_reconcile_on_sqlite(database):
    code, report = reconcile(database)
    assert (code, failing(report)) == (EXIT_OK, {})
    assert report["invariants"]["I12"]["ok"]


def test_a_debt_at_odds_with_its_record_is_reported_on_sqlite(database):
    plant(database, "UPDATE billing_wallet SET debt = debt + 1")
    code, report = reconcile(database)
    assert code == EXIT_PROBLEMS
    assert list(failing(report)) == ["I12"]
    (violation,) = failing(report)["I12"]
    assert (violation["expected"], violation["found"]) == (0, 1)


def test_a_debt_entry_no_top_up_paid_and_a_changed_credit_are_reported_on_sqlite(database):
    plant(database, "UPDATE billing_topup SET debt_paid = 0, amount = amount + 1 WHERE debt_paid > 0")
    code, report = reconcile(database)
    assert code == EXIT_PROBLEMS
    assert list(failing(report)) == ["I12"]
    details = sorted(violation["detail"] for violation in failing(report)["I12"])
    assert len(details) == 3, details
    assert details[0] == "debt differs from reversals' debt (4) less debt paid by top-ups (0)"
    assert details[1].startswith("debt entry of top-up ")
    assert details[1].endswith(" that paid no debt")
    assert details[2].startswith("succeeded top-up ")
    assert "is not linked to its credit" in details[2]
