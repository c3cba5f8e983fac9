"""reconcile on the embedded SQLite database (the default without DATABASE_URL): a broken
ledger chain (I9), a missing append-only trigger (I6), overlapping charges and a usage
record at odds with itself (I11, which PostgreSQL's constraints hold in part) are
reported, not a crash and not a silent ok.

The suite runs on PostgreSQL (its settings refuse SQLite), so each test runs the app as
an operator would, in subprocesses against a SQLite file of its own: ``migrate`` once
per module (the file is copied per test), a seed, drift planted with raw SQL, then
``reconcile --json``, judged by its output and exit status.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from iaas.common.cli import EXIT_OK, EXIT_PROBLEMS

ROOT = Path(__file__).resolve().parents[2]

# One customer with two top-ups (a ledger chain of two entries), everything delivered.
SEED = """
from django.contrib.auth import get_user_model
from iaas.billing import services
user = get_user_model().objects.create_user("sqlite-customer")
wallet = services.wallet_create(owner_id=user.id, currency="EUR")
services.top_up_create(wallet_id=wallet.id, owner_id=user.id, amount=1000)
services.top_up_create(wallet_id=wallet.id, owner_id=user.id, amount=500)
"""

# A third entry whose balance_after is one more than the chain says (the balance and the
# wallet's counter follow it, so only I9's chain is wrong). INSERT is what the append-only
# triggers allow.
PLANT_CHAIN_BREAK = """
import uuid
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute(
        "INSERT INTO billing_ledgerentry (id, wallet_id, sequence, kind, amount, balance_after, "
        "transaction_date, posted_at, description, reference, context, source_id, created_by_id) "
        "SELECT %s, wallet_id, sequence + 1, 'adjustment', 100, balance_after + 101, transaction_date, "
        "posted_at, 'planted', 'planted', '', NULL, NULL FROM billing_ledgerentry "
        "ORDER BY sequence DESC LIMIT 1",
        [uuid.uuid4().hex],
    )
    cursor.execute("UPDATE billing_wallet SET balance = balance + 100, ledger_sequence = ledger_sequence + 1")
"""


SETTINGS = "iaas.settings.development"  # manage.py's default: what an operator runs


def manage(database: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "IAAS_SQLITE_PATH": str(database),
        "DJANGO_SETTINGS_MODULE": SETTINGS,
    }
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def must(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> Path:
    database = tmp_path_factory.mktemp("sqlite") / "migrated.sqlite3"
    must(manage(database, "migrate", "--no-input", "-v0"))
    must(manage(database, "shell", "-c", SEED))
    return database


@pytest.fixture
def database(migrated, tmp_path) -> Path:
    copy = tmp_path / "db.sqlite3"
    shutil.copyfile(migrated, copy)  # WAL checkpointed: every command above has exited
    return copy


def reconcile(database: Path) -> tuple[int, dict]:
    result = manage(database, "reconcile", "--json")
    # A crash exits 1 too: only a JSON report on stdout counts as an answer.
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout.startswith("{"), result.stderr
    assert result.returncode in (EXIT_OK, EXIT_PROBLEMS), result.stderr
    return result.returncode, json.loads(result.stdout)


def failing(report: dict) -> dict[str, list[dict]]:
    return {name: check["violations"] for name, check in report["invariants"].items() if not check["ok"]}


def test_a_consistent_sqlite_database_is_clean(database):
    code, report = reconcile(database)
    assert (code, failing(report)) == (EXIT_OK, {})
    assert report["ok"]


def test_a_broken_ledger_chain_is_reported_on_sqlite(database):
    must(manage(database, "shell", "-c", PLANT_CHAIN_BREAK))
    code, report = reconcile(database)
    assert code == EXIT_PROBLEMS
    assert list(failing(report)) == ["I9"]
    (violation,) = failing(report)["I9"]
    assert violation["detail"] == "ledger chain broken"
    assert violation["expected"] == {"sequence": 3, "balance_after": 1600}
    assert violation["found"] == {"sequence": 3, "balance_after": 1601}


@pytest.mark.parametrize("trigger", ["billing_ledgerentry_no_update", "billing_refund_no_delete"])
def test_a_dropped_append_only_trigger_is_reported_on_sqlite(database, trigger):
    must(
        manage(
            database,
            "shell",
            "-c",
            f"from django.db import connection; connection.cursor().execute('DROP TRIGGER {trigger}')",
        )
    )
    code, report = reconcile(database)
    assert code == EXIT_PROBLEMS
    assert list(failing(report)) == ["I6"]
    (violation,) = failing(report)["I6"]
    assert violation["detail"] == trigger.rsplit("_no_", 1)[0]


# A server bought, its first hour settled, then three hours metered into its usage record
# and not settled (Cloud's allowance spent, Billing holding it: I4 counts it as accrued).
BUY_AND_METER = """
from iaas.billing.models import Wallet
from iaas.cloud import services
from iaas.contracts import bus
from tests.factories import usage_accrued
wallet = Wallet.objects.get()
server = services.server_create(
    owner_id=wallet.owner_id, wallet_id=wallet.id, name="web", plan_id="s-2vcpu-4gb"
)
bus.deliver_pending()
usage_accrued(server, hours=3)
"""

# The server's first hour charged again, half an hour later (what the exclusion
# constraint refuses on PostgreSQL).
PLANT_OVERLAP = """
import uuid
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute(
        "INSERT INTO cloud_charge (id, wallet_id, owner_id, amount, currency, description, subject_id, "
        "period_start, period_end, transaction_date, created_at, refunded_amount, ledger_entry_id) "
        "SELECT %s, wallet_id, owner_id, amount, currency, 'planted', subject_id, "
        "datetime(period_start, '+30 minutes'), datetime(period_end, '+30 minutes'), transaction_date, "
        "created_at, 0, NULL FROM cloud_charge",
        [uuid.uuid4().hex],
    )
"""


def test_usage_accrued_on_sqlite_is_clean_and_an_overlapping_charge_is_reported(database):
    must(manage(database, "shell", "-c", BUY_AND_METER))
    code, report = reconcile(database)
    assert (code, failing(report)) == (EXIT_OK, {})
    assert report["invariants"]["I4"]["ok"]  # the hours accrued are held, not yet charged
    assert report["invariants"]["I11"]["ok"]
    must(manage(database, "shell", "-c", PLANT_OVERLAP))
    code, report = reconcile(database)
    assert code == EXIT_PROBLEMS
    assert list(failing(report)) == ["I11"]
    (violation,) = failing(report)["I11"]
    assert "overlaps an earlier charge of the same service" in violation["detail"]


def test_a_usage_record_that_disagrees_with_itself_is_reported_on_sqlite(database):
    must(manage(database, "shell", "-c", BUY_AND_METER))
    must(
        manage(
            database,
            "shell",
            "-c",
            "from django.db import connection; "
            "connection.cursor().execute("
            "'UPDATE cloud_usage SET list_amount = list_amount + 4, list_exact = list_exact + 4')",
        )
    )
    code, report = reconcile(database)
    assert code == EXIT_PROBLEMS
    assert list(failing(report)) == ["I11"]
    (violation,) = failing(report)["I11"]
    assert violation["detail"].endswith("amount is not min(cap 2000 + refunded 0, list 20)")
    assert (violation["expected"], violation["found"]) == (20, 16)
