"""Batch workers killed mid-batch (issue 11, item 6): metering and settlement workers run
as processes against the test database, each batch made to wait inside its open
transaction after its writes (iaas.common.faults: IAAS_PAUSE_IN_METERING_BATCH and
IAAS_PAUSE_IN_SETTLEMENT_BATCH), and are SIGKILLed there, again and again, in a run's
first batch or after some have committed. Each kill is checked to have landed inside an
open batch: the worker logged the batch's start and never its commit, its backend sat
idle in that transaction holding a transaction id, and PostgreSQL reports that
transaction aborted. Then the commands run once more, normally, and the work is done
exactly once: every server paid to the same hour, its usage record holding those hours
(I11), each usage record closed once into charges that tile its hours without a gap or
an overlap, each charge booked once, reconcile clean.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection

from iaas.billing.models import Wallet
from iaas.cloud import services as cloud
from iaas.cloud.models import Charge, Server, Usage
from iaas.contracts import bus
from iaas.contracts.models import OutboxMessage
from iaas.operations.reconciliation import reconcile
from tests.batch_runs import at
from tests.factories import funded_wallet

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
H = dt.timedelta(hours=1)
T0 = at(2026, 5, 10)  # the servers are bought then
WALLETS, SERVERS_PER_WALLET = 4, 3
PLAN, PRICE = "s-2vcpu-4gb", 4
FUNDS = 10_000
BATCH_SIZE = "2"  # six batches a run: room to kill after some have committed
LONG_PAUSE = 30.0  # seconds a batch waits before its commit when the kill is meant for the first
SHORT_PAUSE = 1.5  # ... when earlier batches are meant to commit first
PAUSED_FOR = 0.25  # idle in its transaction this long after its writes: it is in the pause
TIMEOUT = 60.0  # generous bound on any one wait (a worker's start, a backend's exit)


def database_url() -> str:
    """The test database, for the workers' DATABASE_URL."""
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    return f"postgres://{quote(db['USER'], safe='')}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """A batch command in its own process, against the test database, named in
    pg_stat_activity (PGAPPNAME), its log lines (stderr) read as they come."""

    def __init__(self, name: str, command: str, *args: str, pause: dict[str, float]) -> None:
        self.name = name
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "iaas.settings.test",
            "DATABASE_URL": database_url(),
            "PGAPPNAME": name,
            "LOG_LEVEL": "INFO",
            **{f"IAAS_PAUSE_IN_{point.upper()}": str(seconds) for point, seconds in pause.items()},
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", command, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # end of the log: the process is gone

    def next_line(self, wait: float) -> str | None:
        """The next log line, or "" when none came within ``wait``; None at the end."""
        try:
            line = self.lines.get(timeout=wait)
        except queue.Empty:
            return ""
        if line is not None:
            self.log.append(line)
        return line

    def rest_of_log(self) -> list[str]:
        self.reader.join(TIMEOUT)
        while self.next_line(0) not in ("", None):
            pass
        return self.log

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.rest_of_log()


@dataclass
class Kill:
    """Where a kill landed: in the worker's ``batch``-th batch (after ``batch - 1``
    committed), inside transaction ``xid``, which PostgreSQL then reports as ``status``."""

    worker: str
    batch: int
    xid: int
    status: str = ""
    log: list[str] = field(default_factory=list)


def paused_transaction(name: str) -> int | None:
    """The transaction id of worker ``name``'s batch while it waits in the pause: its
    backend idle in a transaction that has written (it holds an xid) for PAUSED_FOR."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT backend_xid::text FROM pg_stat_activity WHERE application_name = %s "
            "AND state = 'idle in transaction' AND backend_xid IS NOT NULL "
            "AND clock_timestamp() - state_change > %s * interval '1 second'",
            [name, PAUSED_FOR],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else None


def wait_for_backend_to_exit(name: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name])
            if cursor.fetchone()[0] == 0:
                return
        assert time.monotonic() < deadline, f"the backend of {name} outlived it"
        time.sleep(0.02)


def transaction_status(xid: int) -> str:
    """What PostgreSQL's commit log says of a transaction (by its 32-bit id, widened with
    the current epoch): "committed", "aborted" or "in progress"."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
        current = int(cursor.fetchone()[0])
        epoch = current >> 32
        if xid > current & 0xFFFFFFFF:  # from before the last wraparound
            epoch -= 1
        cursor.execute("SELECT pg_xact_status(%s::text::xid8)", [str(epoch << 32 | xid)])
        return cursor.fetchone()[0]


def kill_inside_a_batch(name: str, kind: str, command: str, *args: str, after: int) -> Kill:
    """Start ``command`` as a worker whose ``kind`` batches ("metering", "settlement")
    pause before committing, let ``after`` of its batches commit, and SIGKILL it inside
    the next batch that writes, while it waits in its open transaction. A batch that
    commits before the kill lands (a slow poll on a busy machine) only moves the kill to
    the next one; a worker that finishes first (less work was left than expected) is
    started again with fewer batches to commit first."""
    for attempt, wanted in enumerate((after, max(after - 1, 0), 0)):
        pause = LONG_PAUSE if wanted == 0 else SHORT_PAUSE
        worker = Worker(f"{name}-{attempt}", command, *args, pause={f"{kind}_batch": pause})
        try:
            kill = _kill_when_paused(worker, kind, after=wanted)
        finally:
            worker.stop()
        if kill is not None:
            kill.log = worker.rest_of_log()
            wait_for_backend_to_exit(worker.name)
            kill.status = transaction_status(kill.xid)
            return kill
    raise AssertionError(f"{name}: no kill landed inside a batch in 3 attempts")


def _kill_when_paused(worker: Worker, kind: str, *, after: int) -> Kill | None:
    started = committed = 0
    armed = False  # a batch we mean to kill is open
    deadline = time.monotonic() + TIMEOUT + LONG_PAUSE
    while time.monotonic() < deadline:
        if armed and (xid := paused_transaction(worker.name)) is not None:
            os.kill(worker.process.pid, signal.SIGKILL)
            worker.process.wait()
            return Kill(worker.name, started, xid)
        line = worker.next_line(0.01 if armed else 0.2)
        if line is None:
            return None  # it finished before a kill could land
        if f"{kind} batch started" in line:
            started += 1
            armed = started > after
        elif f"{kind} batch committed" in line:
            committed += 1
            armed = False  # it committed under our eyes: the next batch, then
    raise AssertionError(
        f"{worker.name} ran {TIMEOUT + LONG_PAUSE} s without a kill landing:\n" + "\n".join(worker.log)
    )


def assert_books_hold_mid_run() -> None:
    """Reconcile after a kill, while usage is accrued and not yet closed. Every invariant
    but I4: reconcile does not count accrued usage in I4 yet (the accrued-usage term is
    coming), so a wallet metered and not yet settled shows there as drift. I4 is checked
    at the end, once everything is closed; with that term in place this can be the full
    ``assert_invariants``."""
    report = reconcile()
    broken = {name: found for name, found in report.violations.items() if found and name != "I4"}
    assert (broken, report.stuck_events) == ({}, []), report.as_dict()


def command(name: str, *args: str) -> dict:
    out = StringIO()
    call_command(name, "--json", *args, stdout=out, stderr=StringIO())
    return json.loads(out.getvalue())


def test_workers_killed_inside_their_batches_leave_the_next_run_to_finish_the_work_once(
    catalog, assert_invariants
):
    with time_machine.travel(T0, tick=False):
        wallets = [funded_wallet(amount=FUNDS) for _ in range(WALLETS)]
        for wallet in wallets:
            for number in range(SERVERS_PER_WALLET):
                cloud.server_create(
                    owner_id=wallet.owner_id, wallet_id=wallet.id, name=f"web{number}", plan_id=PLAN
                )
        bus.deliver_pending()
    first, second, third = (T0 + hours * H + dt.timedelta(minutes=30) for hours in (3, 6, 9))
    meter = ("bill_usage", "--batch-size", BATCH_SIZE, "--at")
    settle = ("settle_usage", "--batch-size", BATCH_SIZE, "--at")

    # Each kill has work to land in: a run of 12 servers or usage records is six batches.
    kills = []
    for name, kind, run, moment, after in (
        ("meter-1", "metering", meter, first, 0),  # in its first batch: nothing committed
        ("meter-2", "metering", meter, first, 1),  # after a batch: some servers metered, not all
        ("settle-1", "settlement", settle, first, 0),  # what meter-2 committed, not closed
        ("between", "", meter, second, 0),  # a whole run, untouched: every server metered
        ("settle-2", "settlement", settle, second, 1),  # some records closed, not all
        ("meter-3", "metering", meter, third, 1),  # a later hour on half-closed records
        ("settle-3", "settlement", settle, third, 0),
    ):
        if not kind:
            assert command(*run, moment.isoformat())["failed"] == []
            continue
        kill = kill_inside_a_batch(name, kind, *run, moment.isoformat(), after=after)
        kills.append(kill)
        # Landed inside the open batch: its start logged, no commit after it, and its
        # transaction rolled back by PostgreSQL.
        last_start = max(i for i, line in enumerate(kill.log) if f"{kind} batch started" in line)
        assert not any(f"{kind} batch committed" in line for line in kill.log[last_start:]), kill.log
        assert kill.status == "aborted", kill
        assert_books_hold_mid_run()

    print(
        "\nkills landed inside open batches:",
        json.dumps(
            [
                {
                    "worker": k.worker,
                    "killed in batch": k.batch,
                    "batches committed before": sum(" batch committed" in line for line in k.log),
                    "transaction": f"{k.xid} {k.status}",
                }
                for k in kills
            ]
        ),
    )
    assert len(kills) == 6  # three metering workers, three settlement workers

    # The commands once more, normally: they finish the work, once.
    final = command(*meter, third.isoformat())
    assert final["failed"] == []
    command(*settle, third.isoformat())
    assert command("deliver_events")["pending"] == 0
    print(
        "the run after the kills:",
        json.dumps({k: final[k] for k in ("services", "hours_charged", "charged")}),
    )

    paid_until = T0 + 10 * H  # bought at T0, metered through the hour started at 09:00
    hours = (paid_until - T0) // H
    for server in Server.objects.all():
        # paid_until moved once per due hour, and the usage record holds those hours (I11).
        assert (server.status, server.paid_until) == (Server.Status.ACTIVE, paid_until), server
        usage = Usage.objects.get(service_id=server.id)
        assert (usage.hours, usage.amount) == (hours, hours * PRICE), server
        # Closed once: what it holds is closed, in charges that tile its hours exactly.
        assert (usage.closed_hours, usage.closed_amount, usage.close_due_at) == (hours, hours * PRICE, None)
        spans = list(
            Charge.objects.filter(subject_id=server.id)
            .order_by("period_start")
            .values_list("period_start", "period_end", "amount")
        )
        assert spans[0][0] == T0
        assert spans[-1][1] == paid_until
        assert all(earlier[1] == later[0] for earlier, later in itertools.pairwise(spans)), spans
        assert sum(amount for _, _, amount in spans) == usage.closed_amount
    # Each charge booked once: every wallet paid exactly what was charged on it.
    for wallet in wallets:
        wallet = Wallet.objects.get(pk=wallet.id)
        charged = sum(Charge.objects.filter(wallet_id=wallet.id).values_list("amount", flat=True))
        assert charged == SERVERS_PER_WALLET * hours * PRICE
        assert wallet.balance == FUNDS - charged
    assert not OutboxMessage.objects.exclude(last_error="").exists()
    assert_invariants()
