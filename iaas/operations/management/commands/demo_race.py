"""Show the guarantee at work: a customer whose wallet pays for a server or a hosting
plan but not both buys both at the same instant from two threads, round after round.
Exactly one purchase wins each round; the invariants hold at the end."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, connections

from iaas.billing import services as billing_services
from iaas.cloud import services as cloud_services
from iaas.cloud.models import ServerPlan
from iaas.contracts import bus
from iaas.contracts.errors import InsufficientFunds
from iaas.hosting import services as hosting_services
from iaas.hosting.models import HostingPlan
from iaas.operations.reconciliation import reconcile

SERVER_PLAN = "s-8vcpu-16gb"
HOSTING_PLAN = "web-starter"


@dataclass
class Attempt:
    who: str
    won: bool = False
    error: str = ""
    started: float = 0.0
    finished: float = 0.0


class Command(BaseCommand):
    help = "Race a server purchase against a hosting purchase on a wallet that affords one."

    def add_arguments(self, parser):
        parser.add_argument("--rounds", type=int, default=10)
        parser.add_argument("--quiet", action="store_true", help="print only the summary")

    def handle(self, *args, rounds: int, quiet: bool, **options):
        server_plan = ServerPlan.objects.get(pk=SERVER_PLAN)
        hosting_plan = HostingPlan.objects.get(pk=HOSTING_PLAN)
        # Affords the dearer of the two, never both.
        budget = max(server_plan.price_per_hour, hosting_plan.price_per_month)
        if budget >= server_plan.price_per_hour + hosting_plan.price_per_month:
            raise CommandError("the catalog's prices cannot make a one-winner race")
        waits = LockWaitMonitor() if connection.vendor == "postgresql" else None
        if waits:
            waits.start()
        tally = {"cloud": 0, "hosting": 0, "overlapping": 0, "bad": 0}
        for number in range(1, rounds + 1):
            attempts = self.race_once(budget, server_plan.id, hosting_plan.id)
            winners = [a for a in attempts if a.won]
            overlapping = (
                attempts[0].started < attempts[1].finished and attempts[1].started < attempts[0].finished
            )
            tally["overlapping"] += overlapping
            if len(winners) == 1:
                tally[winners[0].who] += 1
            else:
                tally["bad"] += 1
            if not quiet:
                loser = next((a for a in attempts if not a.won), None)
                self.stdout.write(
                    f"round {number:>3}: winner {', '.join(a.who for a in winners) or 'none':<8}"
                    f" loser {loser.who if loser else '-':<8} ({loser.error if loser else 'both won!'})"
                )
        bus.deliver_pending()
        if waits:
            waits.stop()
        report = reconcile()
        self.stdout.write(
            f"\n{rounds} rounds: cloud won {tally['cloud']}, hosting won {tally['hosting']}, "
            f"rounds without exactly one winner: {tally['bad']}"
        )
        self.stdout.write(f"both purchases in flight at once in {tally['overlapping']} of {rounds} rounds")
        if waits:
            self.stdout.write(f"row-lock waits seen in PostgreSQL (pg_stat_activity samples): {waits.seen}")
        self.stdout.write(f"invariants: {'all hold' if report.ok else 'VIOLATED'}")
        if not report.ok or tally["bad"]:
            raise CommandError("the race broke a guarantee")

    def race_once(self, budget: int, server_plan: str, hosting_plan: str) -> list[Attempt]:
        User = get_user_model()
        customer = User.objects.create_user(username=f"race-{uuid.uuid4().hex[:12]}")
        wallet = billing_services.wallet_create(owner_id=customer.id, currency="EUR")
        billing_services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=budget)
        barrier = threading.Barrier(2)

        def buy_server():
            cloud_services.server_create(
                owner_id=customer.id, wallet_id=wallet.id, name="race", plan_id=server_plan
            )

        def buy_hosting():
            hosting_services.subscription_create(
                owner_id=customer.id,
                wallet_id=wallet.id,
                domain=f"race-{uuid.uuid4().hex[:12]}.example",
                plan_id=hosting_plan,
            )

        attempts = [Attempt("cloud"), Attempt("hosting")]
        threads = [
            threading.Thread(target=run_attempt, args=(attempt, purchase, barrier))
            for attempt, purchase in zip(attempts, (buy_server, buy_hosting), strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return attempts


def run_attempt(attempt: Attempt, purchase, barrier: threading.Barrier) -> None:
    try:
        barrier.wait()
        attempt.started = time.perf_counter()
        purchase()
        attempt.won = True
    except InsufficientFunds:
        attempt.error = "insufficient_funds"
    except Exception as error:  # reported, and counted as a broken round
        attempt.error = repr(error)
    finally:
        attempt.finished = time.perf_counter()
        connections.close_all()


class LockWaitMonitor(threading.Thread):
    """Samples pg_stat_activity for backends of this database waiting on a row lock."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            with connections["default"].cursor() as cursor:
                while not self._stop_event.is_set():
                    cursor.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                    )
                    self.seen += cursor.fetchone()[0]
                    time.sleep(0.0005)
        finally:
            connections.close_all()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
