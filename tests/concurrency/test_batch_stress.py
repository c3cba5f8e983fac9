"""The batch runs under stress (issue 11, item 6): two metering workers, a settlement run
with its delivery, idle releases, refunds, an operator's adjustments and customers'
purchases, all on the same wallets at once, each thread on its own PostgreSQL
connection. Batches lock each class of row in one order and skip what others hold
(ARCHITECTURE.md, "Batches"), so nothing may deadlock (pg_stat_database.deadlocks
unchanged), no transaction may be retried, no lock may time out, every hour is accrued
exactly once, every charge is booked once, and the books reconcile.

Everything is asserted through the commands, the contexts' records and reconcile, not
through Billing's internals, so the test keeps its meaning when Billing's side of
settlement changes. The harness is checked too: a deadlock made on purpose shows in the
counter and in the retry log, so the stress test's "nothing seen" means something.
"""

from __future__ import annotations

import datetime as dt
import inspect
import itertools
import json
import logging
import threading
import time
import uuid
from collections import Counter, defaultdict
from contextlib import contextmanager
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.db.models import Q

from iaas.billing import services as billing
from iaas.billing.models import LedgerEntry, Wallet
from iaas.cloud import services as cloud
from iaas.cloud.models import Charge as CloudCharge
from iaas.cloud.models import Server, Usage
from iaas.common.db import retry_transaction
from iaas.contracts import bus
from iaas.contracts.errors import AdjustmentRefused, InsufficientFunds
from iaas.contracts.models import OutboxMessage
from iaas.hosting import services as hosting
from iaas.hosting.models import Charge as HostingCharge
from tests.batch_runs import at
from tests.factories import UserFactory, funded_wallet
from tests.threads import backend_pid, deadlocks_detected, run_at_once, wait_for_backends_to_exit

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]

H = dt.timedelta(hours=1)
T0 = at(2026, 5, 10)  # the seeded servers are bought then; the metering runs walk the hours after
HOURS = 8  # metering runs, each at the next hour (+30 min): one more hour of every running server
PLAN = "s-2vcpu-4gb"  # 4 cents an hour, far below its monthly cap
PRICE = 4
SERVERS_PER_WALLET = 3
BATCH_SIZE = "6"  # two wallets a batch: several batches a run, so the two workers interleave
RICH, POOR, IDLE = 6, 2, 2  # wallets that pay; that run dry after two runs; with idle allowance only
BATCH_PAUSE = "0.05"  # seconds each batch stays open after its writes (iaas.common.faults)
CHUNK = 40  # Cloud reserves ahead, so allowances hold money that releases give back
DEADLINE = 120  # seconds: a worker still running then has hung (never reached on a sound run)

# The retry wrapper's log line, and the texts of the errors this test must never meet.
RETRY_LOG = "retrying "
FORBIDDEN = ("lock timeout", "55P03", "deadlock", "40P01", "statement timeout", "could not serialize")


def refund_in_full(charge: CloudCharge, *, operator_id: int) -> int:
    """Refund a settled charge in full through Billing: the one call here that depends on
    how Billing names a charge (by its own ledger entry while each charge has one, by the
    charge id once an entry groups a wallet's charges)."""
    if "charge_id" in inspect.signature(billing.charge_refund).parameters:
        target = {"charge_id": charge.id}
    else:
        entry = charge.ledger_entry_id or LedgerEntry.objects.get(kind="charge", source_id=charge.id).id
        target = {"charge_entry_id": entry}
    return billing.charge_refund(**target, reason="stress test", operator_id=operator_id).amount


def booked_cloud_charges():
    """Cloud's charges that Billing has booked: those that record their ledger entry
    (ChargeSettled), or, while Billing does not tell the contexts yet, those with a
    charge entry of their own."""
    own_entry = LedgerEntry.objects.filter(kind="charge", context="cloud").values("source_id")
    return CloudCharge.objects.filter(Q(ledger_entry_id__isnull=False) | Q(id__in=own_entry))


def command(name: str, *args: str) -> dict:
    """Run a management command with ``--json`` and return its summary."""
    out = StringIO()
    call_command(name, "--json", *args, stdout=out, stderr=StringIO())
    return json.loads(out.getvalue())


class Stress:
    """What the workers share: when to stop, each worker's operations and their time
    window, the refusals a customer or operator may meet, what each wallet was credited,
    and the backends to wait for before reading the deadlock counter."""

    def __init__(self, names: list[str]) -> None:
        self.stop = threading.Event()  # the metering runs are over
        self.failed = threading.Event()  # a worker failed: everyone stops at once
        self.halfway = threading.Event()  # both metering workers have done half their runs
        self.started = {name: threading.Event() for name in names}  # a first operation done
        self.deadline = time.monotonic() + DEADLINE
        self.lock = threading.Lock()
        self.ops: Counter = Counter()
        self.windows: dict[str, list[float]] = {}
        self.refusals: dict[str, Counter] = defaultdict(Counter)
        self.credited: Counter = Counter()  # wallet -> top-ups, adjustments, refunds
        self.pids: list[int] = []

    def worker(self, name: str, body):
        """A thread running ``body()`` on its own connection, named for the log records; a
        failure stops every worker at once (the test reports it), never leaves one waiting."""

        def run():
            threading.current_thread().name = name
            with self.lock:
                self.pids.append(backend_pid())
            try:
                return body()
            except BaseException:
                self.failed.set()
                self.stop.set()
                raise

        return run

    @contextmanager
    def op(self, name: str):
        start = time.time()
        yield
        end = time.time()
        with self.lock:
            self.ops[name] += 1
            self.windows.setdefault(name, [start, end])[1] = end
        self.started[name].set()

    def refused(self, name: str, error: Exception) -> None:
        with self.lock:
            self.refusals[name][type(error).__name__] += 1

    def credit(self, wallet_id: uuid.UUID, amount: int) -> None:
        with self.lock:
            self.credited[wallet_id] += amount

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        assert left > 0, f"still running after {DEADLINE} s"
        return left

    def keep_going(self, name: str, *, at_least: int = 1) -> bool:
        """Until the metering runs are over and ``at_least`` operations are done, unless
        a worker failed."""
        self.remaining()
        if self.failed.is_set():
            return False
        return not self.stop.is_set() or self.ops[name] < at_least

    def wait_for(self, name: str) -> None:
        """Until worker ``name`` has done an operation."""
        while not self.started[name].wait(min(0.1, self.remaining())):
            assert not self.failed.is_set(), "another worker failed"


def seed(stress: Stress) -> dict[str, list[Wallet]]:
    """At T0: wallets with running servers (and a hosting plan for those that pay), two
    wallets that can pay for two more hours only, and two whose only server ended at
    once, leaving allowance idle (Cloud reserves ahead). Everything booked."""
    wallets: dict[str, list[Wallet]] = {"rich": [], "poor": [], "idle": []}
    budgets = {"rich": 20_000, "poor": PRICE * SERVERS_PER_WALLET * 3, "idle": 1_000}
    with time_machine.travel(T0, tick=False):
        for kind, count in (("rich", RICH), ("poor", POOR), ("idle", IDLE)):
            for _ in range(count):
                wallet = funded_wallet(UserFactory(), amount=budgets[kind])
                stress.credit(wallet.id, budgets[kind])
                wallets[kind].append(wallet)
                servers = SERVERS_PER_WALLET if kind != "idle" else 1
                for number in range(servers):
                    server = cloud.server_create(
                        owner_id=wallet.owner_id, wallet_id=wallet.id, name=f"{kind}-{number}", plan_id=PLAN
                    )
                    if kind == "idle":
                        cloud.server_terminate(server_id=server.id)
                if kind == "rich":
                    hosting.subscription_create(
                        owner_id=wallet.owner_id,
                        wallet_id=wallet.id,
                        domain=f"{uuid.uuid4().hex[:12]}.example",
                        plan_id="web-starter",
                    )
        bus.deliver_pending()
    return wallets


def batch_windows(records, kind: str) -> dict[str, list[tuple[float, float]]]:
    """Each thread's ``kind`` batches ("metering", "settlement") as (started, committed)
    times, from their log lines. A batch that found nothing logs no commit: left out."""
    windows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    opened: dict[str, float] = {}
    for record in records:
        message = record.getMessage()
        if message.startswith(f"{kind} batch started"):
            opened[record.threadName] = record.created
        elif message.startswith(f"{kind} batch committed") and record.threadName in opened:
            windows[record.threadName].append((opened.pop(record.threadName), record.created))
    return windows


def overlapping(first: list[tuple[float, float]], second: list[tuple[float, float]]) -> int:
    """Pairs of batches, one from each list, whose transactions were open at once."""
    return sum(1 for a, b in itertools.product(first, second) if a[0] < b[1] and b[0] < a[1])


def test_batches_settlement_releases_refunds_adjustments_and_purchases_at_once_never_deadlock(
    catalog, settings, caplog, monkeypatch, assert_invariants
):
    settings.IAAS_RESERVE_AHEAD = {"cloud": CHUNK, "hosting": 0}
    # Each batch holds its transaction open a little after its writes, as a batch of
    # thousands would: what it locks stays locked while the others come and go.
    monkeypatch.setenv("IAAS_PAUSE_IN_METERING_BATCH", BATCH_PAUSE)
    monkeypatch.setenv("IAAS_PAUSE_IN_SETTLEMENT_BATCH", BATCH_PAUSE)
    caplog.set_level(logging.INFO)
    operator = UserFactory(is_staff=True)
    others = ["settle", "release", "refund", "adjust", "purchase"]
    stress = Stress(["meter-a", "meter-b", *others])
    wallets = seed(stress)
    assert_invariants()
    lockstep = threading.Barrier(2, timeout=DEADLINE)  # the two workers run each hour together
    meters_left = [2]
    halfway: list[str] = []
    summaries: dict[str, list[dict]] = {
        name: [] for name in ("meter-a", "meter-b", "settle", "deliver", "release", "refund")
    }
    moments = [T0 + hour * H + dt.timedelta(minutes=30) for hour in range(1, HOURS + 1)]

    def meter(name: str):
        def runs():
            try:
                for hour, moment in enumerate(moments, start=1):
                    if hour == HOURS // 2 + 1:
                        # Half the runs done: every other worker has begun by now, so the
                        # rest of the runs overlap all of them.
                        for other in others:
                            stress.wait_for(other)
                    lockstep.wait(stress.remaining())
                    with stress.op(name):
                        summary = command(
                            "bill_usage", "--at", moment.isoformat(), "--batch-size", BATCH_SIZE
                        )
                    summaries[name].append(summary)
                    if hour == HOURS // 2:
                        with stress.lock:
                            halfway.append(name)
                            if len(halfway) == 2:
                                stress.halfway.set()
            except BaseException:
                lockstep.abort()
                raise
            finally:
                with stress.lock:
                    meters_left[0] -= 1
                    if not meters_left[0]:
                        stress.stop.set()

        return stress.worker(name, runs)

    def settle():
        while stress.keep_going("settle"):
            with stress.op("settle"):
                summaries["settle"].append(command("settle_usage"))
                summaries["deliver"].append(command("deliver_events", "--batch-size", "5", "--limit", "30"))

    def release():
        while stress.keep_going("release"):
            with stress.op("release"):
                summaries["release"].append(command("release_idle_allowances", "--older-than", "1s"))
            time.sleep(0.01)  # mostly nothing is idle: leave the others the processor

    def refund():
        refunded: set[uuid.UUID] = set()
        metered = Q(period_start__gt=T0, period_end__lte=moments[-1])  # closed by settlement
        paying_wallets = [w.id for w in wallets["rich"]]  # a refund would let a dry wallet run again
        while stress.keep_going("refund", at_least=3):
            # The latest metered charge Billing has booked (its usage record keeps
            # accruing meanwhile); once the runs are over, any booked charge will do.
            charges = booked_cloud_charges().filter(wallet_id__in=paying_wallets).exclude(id__in=refunded)
            if not stress.stop.is_set():
                charges = charges.filter(metered)
            charge = charges.order_by("-period_start", "id").first()
            if charge is None:
                time.sleep(0.01)
                continue
            with stress.op("refund"):
                amount = refund_in_full(charge, operator_id=operator.id)
            refunded.add(charge.id)
            stress.credit(charge.wallet_id, amount)
            summaries["refund"].append({"metered": charge.period_start > T0, "amount": amount})

    def adjust():
        # First, once half the runs are done (the dry wallets' servers suspended by then),
        # the money one dry wallet needs to run again; then debits and credits.
        while not stress.halfway.wait(min(0.1, stress.remaining())):
            assert not stress.failed.is_set(), "another worker failed"
        plan = itertools.chain(
            [(wallets["poor"][0], 1_000)],
            ((wallet, amount) for wallet in itertools.cycle(wallets["rich"]) for amount in (-30, 30)),
        )
        for wallet, amount in plan:
            if not stress.keep_going("adjust", at_least=3):
                break
            with stress.op("adjust"):
                try:
                    billing.wallet_adjust(
                        wallet_id=wallet.id, amount=amount, reason="stress test", operator_id=operator.id
                    )
                except AdjustmentRefused as error:  # held money in the way: the operator's answer
                    stress.refused("adjust", error)
                    continue
            stress.credit(wallet.id, amount)

    def purchase():
        buyers = itertools.cycle(wallets["rich"] + wallets["poor"])
        for number in itertools.count():
            if not stress.keep_going("purchase", at_least=4):
                break
            wallet = next(buyers)
            with stress.op("purchase"):
                try:
                    if number % 2:
                        hosting.subscription_create(
                            owner_id=wallet.owner_id,
                            wallet_id=wallet.id,
                            domain=f"{uuid.uuid4().hex[:12]}.example",
                            plan_id="web-starter",
                        )
                    else:
                        cloud.server_create(
                            owner_id=wallet.owner_id,
                            wallet_id=wallet.id,
                            name=f"bought-{number}",
                            plan_id=PLAN,
                        )
                except InsufficientFunds as error:  # the dry wallets: the customer's answer
                    stress.refused("purchase", error)

    deadlocks_before = deadlocks_detected()
    started = time.monotonic()
    outcomes = run_at_once(
        meter("meter-a"),
        meter("meter-b"),
        *(
            stress.worker(name, body)
            for name, body in zip(others, (settle, release, refund, adjust, purchase), strict=True)
        ),
        timeout=DEADLINE + 30,
    )
    elapsed = time.monotonic() - started
    assert [o.error for o in outcomes] == [None] * len(outcomes)
    wait_for_backends_to_exit(stress.pids)
    deadlocks_after = deadlocks_detected()

    # The runs once more, with nobody else running: metering takes what a wallet busy
    # through a run's last pass left to the next run; settlement closes and books the rest.
    leftover = command("bill_usage", "--at", moments[-1].isoformat())
    command("settle_usage")
    # Events deferred in the last second of the stress (their wallet was busy then) are
    # due again only DEFER_DELAY after it: put them in line now, as an operator would.
    bus.retry_failed()
    assert command("deliver_events")["pending"] == 0

    metering = batch_windows(caplog.records, "metering")
    settling = batch_windows(caplog.records, "settlement")
    hours = {name: sum(s["hours_charged"] for s in summaries[name]) for name in ("meter-a", "meter-b")}
    shared_runs = sum(
        1
        for a, b in zip(summaries["meter-a"], summaries["meter-b"], strict=True)
        if a["hours_charged"] and b["hours_charged"]
    )
    totals = Counter()
    for summary in summaries["meter-a"] + summaries["meter-b"] + [leftover]:
        totals.update({action: summary[action] for action in ("suspended", "resumed", "busy")})
    figures = {
        "seconds": round(elapsed, 1),
        "deadlocks before/after": (deadlocks_before, deadlocks_after),
        "operations": dict(stress.ops),
        "refusals": {name: dict(counts) for name, counts in stress.refusals.items()},
        "hours accrued by each metering worker": hours,
        "runs whose hours both workers shared": f"{shared_runs} of {HOURS}",
        "hours left to the next run (wallets busy to the end)": leftover["hours_charged"],
        "servers suspended, resumed": (totals["suspended"], totals["resumed"]),
        "servers of wallets still busy at a run's last pass": totals["busy"],
        "metering batches committed": {name: len(w) for name, w in metering.items()},
        "metering batches open at once (a x b)": overlapping(metering["meter-a"], metering["meter-b"]),
        "metering x settlement batches open at once": overlapping(
            metering["meter-a"] + metering["meter-b"], settling["settle"]
        ),
        "usage records closed while metering ran": sum(
            c["records"] for s in summaries["settle"] for c in s["contexts"].values()
        ),
        "allowances released": sum(
            c["released"] for s in summaries["release"] for c in s["contexts"].values()
        ),
        "refunds (of metered charges)": (
            len(summaries["refund"]),
            sum(r["metered"] for r in summaries["refund"]),
        ),
    }
    print("\nstress figures:", json.dumps(figures, indent=2, default=str))

    # No deadlock, no retry, no lock timeout: not in PostgreSQL's counter, not in any log.
    assert deadlocks_after == deadlocks_before
    retried = [r.getMessage() for r in caplog.records if r.getMessage().startswith(RETRY_LOG)]
    assert retried == []
    complaints = [
        f"{r.threadName} {r.levelname} {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if r.levelno >= logging.WARNING
        or any(word in f"{r.getMessage()} {r.exc_text or ''}".lower() for word in FORBIDDEN)
    ]
    assert complaints == []
    for name in ("meter-a", "meter-b", "release"):
        assert all(s["failed"] == [] for s in summaries[name]), name
    assert not OutboxMessage.objects.exclude(last_error="").exists()
    # The refusals are the ones a customer or an operator is meant to see, no other.
    assert set(stress.refusals["purchase"]) <= {"InsufficientFunds"}
    assert set(stress.refusals["adjust"]) <= {"AdjustmentRefused"}

    # They really ran at once: every worker's window overlaps every other's (the metering
    # workers waited half-way for all the others to begin), and batch transactions of
    # the two metering workers, and of metering and settlement, were open together.
    for first, second in itertools.combinations(sorted(stress.windows), 2):
        assert overlapping([stress.windows[first]], [stress.windows[second]]), f"{first}, {second} apart"
    assert figures["metering batches open at once (a x b)"] > 0
    assert figures["metering x settlement batches open at once"] > 0
    assert figures["allowances released"] >= IDLE  # the idle wallets' allowance at least
    assert len(summaries["refund"]) >= 3

    # Every hour accrued once, whichever worker took it: the usage records hold each
    # server's first hour (bought) plus what the runs reported, no more, no less;
    # a server of a wallet that always paid has each hour once, paid_until included.
    servers = Server.objects.all()
    accrued = sum(hours.values()) + leftover["hours_charged"]
    assert sum(Usage.objects.values_list("hours", flat=True)) == servers.count() + accrued
    assert accrued >= RICH * SERVERS_PER_WALLET * HOURS
    paying = servers.filter(wallet_id__in=[w.id for w in wallets["rich"]], created_at=T0)
    assert paying.count() == RICH * SERVERS_PER_WALLET
    for server in paying:
        assert server.paid_until == T0 + (HOURS + 1) * H
        usage = Usage.objects.get(service_id=server.id)
        assert (usage.hours, usage.amount) == (HOURS + 1, (HOURS + 1) * PRICE)
    # The dry wallets' servers were suspended; those of the one the operator credited
    # half-way resumed (owing the hour they ran unpaid, and paying the hour starting
    # then) and run; the others stay suspended. (A dry wallet's servers may also be
    # suspended and resumed in one run: a release of its idle allowance, not yet applied
    # by Billing, makes reserve refuse until it is: the "lose the sale" side, as designed.)
    assert totals["suspended"] >= POOR * SERVERS_PER_WALLET
    assert totals["resumed"] >= SERVERS_PER_WALLET
    assert set(servers.filter(wallet_id=wallets["poor"][0].id).values_list("status", flat=True)) == {"active"}
    # The other dry wallet ran out: its servers are suspended, except one whose hour the
    # wallet could still pay in a batch that held it alone (the two metering workers
    # share wallets, SKIP LOCKED splits a wallet's servers between their batches, and a
    # wallet pays all of a batch's servers or none of them): such a server is active only
    # with the current hour paid, never running unpaid.
    dry = servers.filter(wallet_id=wallets["poor"][1].id, created_at=T0)
    assert dry.filter(status="suspended").exists()
    for server in dry.exclude(status="suspended"):
        assert (server.status, server.paid_until > moments[-1]) == ("active", True), server

    # Each usage record closed once into charges, and each charge booked once: the
    # charges add up to what was closed, and each wallet's balance is what it was
    # credited (top-ups, adjustments, refunds) less what it was charged.
    for usage in Usage.objects.all():
        assert (usage.closed_amount, usage.closed_hours) == (usage.amount, usage.hours), usage
    for server in servers:
        closed = sum(Usage.objects.filter(service_id=server.id).values_list("closed_amount", flat=True))
        charged = sum(CloudCharge.objects.filter(subject_id=server.id).values_list("amount", flat=True))
        assert charged == closed, server
    for wallet in Wallet.objects.all():
        charged = sum(CloudCharge.objects.filter(wallet_id=wallet.id).values_list("amount", flat=True)) + sum(
            HostingCharge.objects.filter(wallet_id=wallet.id).values_list("amount", flat=True)
        )
        assert wallet.balance == stress.credited[wallet.id] - charged, wallet
    assert_invariants()


def test_the_harness_sees_a_deadlock_and_its_retry(caplog):
    """A deadlock made on purpose (two transactions locking two wallets in opposite
    orders) moves pg_stat_database.deadlocks and makes the retry wrapper log its retry:
    what the stress test reads cannot stay silent when it happens."""
    caplog.set_level(logging.INFO)
    first, second = funded_wallet(amount=100), funded_wallet(amount=100)
    both_hold_one = threading.Barrier(2, timeout=30)
    pids = []

    def lock_in_order(one, other):
        attempts = []

        @retry_transaction
        def lock_both():
            attempts.append(1)
            Wallet.objects.select_for_update().get(pk=one.id)
            if len(attempts) == 1:
                both_hold_one.wait()
            Wallet.objects.select_for_update().get(pk=other.id)

        def work():
            pids.append(backend_pid())
            lock_both()
            return len(attempts)

        return work

    before = deadlocks_detected()
    outcomes = run_at_once(lock_in_order(first, second), lock_in_order(second, first))
    assert [o.error for o in outcomes] == [None, None]
    wait_for_backends_to_exit(pids)
    assert deadlocks_detected() == before + 1
    assert sorted(o.value for o in outcomes) == [1, 2]  # one was the victim, and ran again
    retried = [r for r in caplog.records if r.getMessage().startswith(RETRY_LOG)]
    assert len(retried) == 1
    assert "deadlock" in retried[0].getMessage()
