"""Show the guarantee at work: a customer whose wallet pays for any one of the selling
contexts' purchases but not two buys one in each context at the same instant, one thread
each, round after round (``--contexts cloud,hosting``; default: every registered
context). Exactly one purchase wins each round; the invariants hold at the end.

When the contexts' purchases cost too differently for one wallet to afford any one of
them and never two (a server's hour beside a hosting month), the rounds race the
contexts two at a time, each pair in turn."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, connections

from iaas.billing import services as billing_services
from iaas.contracts import bus, selling
from iaas.contracts.errors import InsufficientFunds
from iaas.operations.reconciliation import reconcile
from iaas.spending.apps import selling_context_config


@dataclass
class Attempt:
    who: str
    won: bool = False
    error: str = ""
    started: float = 0.0
    finished: float = 0.0


class Command(BaseCommand):
    help = "Race one purchase in each selling context on a wallet that affords one of them."

    def add_arguments(self, parser):
        parser.add_argument("--rounds", type=int, default=10)
        parser.add_argument("--quiet", action="store_true", help="print only the summary")
        parser.add_argument(
            "--contexts",
            default="",
            help="the selling contexts to race, by name, comma-separated (default: every registered one)",
        )

    def handle(self, *args, rounds: int, quiet: bool, contexts: str, **options):
        names = [name.strip() for name in contexts.split(",") if name.strip()] or selling.names()
        if len(set(names)) < 2:
            raise CommandError("a race needs two selling contexts or more")
        try:
            demos = {name: selling_context_config(name).demo_module() for name in dict.fromkeys(names)}
        except selling.UnknownContext as unknown:
            raise CommandError(str(unknown)) from None
        prices = {name: demo.race_price() for name, demo in demos.items()}
        races = _one_winner_races(prices)
        if not races:
            raise CommandError("the catalog's prices cannot make a one-winner race")
        waits = LockWaitMonitor() if connection.vendor == "postgresql" else None
        if waits:
            waits.start()
        tally = {**dict.fromkeys(demos, 0), "overlapping": 0, "bad": 0}
        for number in range(1, rounds + 1):
            racing = races[(number - 1) % len(races)]
            attempts = self.race_once(max(prices[name] for name in racing), {n: demos[n] for n in racing})
            winners = [a for a in attempts if a.won]
            # Every purchase was in flight at one same moment.
            overlapping = max(a.started for a in attempts) < min(a.finished for a in attempts)
            tally["overlapping"] += overlapping
            if len(winners) == 1:
                tally[winners[0].who] += 1
            else:
                tally["bad"] += 1
            if not quiet:
                losers = [a for a in attempts if not a.won]
                self.stdout.write(
                    f"round {number:>3}: winner {', '.join(a.who for a in winners) or 'none':<8}"
                    + (
                        "".join(f" loser {loser.who:<8} ({loser.error})" for loser in losers)
                        if losers
                        else f" loser {'-':<8} ({'both' if len(racing) == 2 else 'all'} won!)"
                    )
                )
        bus.deliver_pending()
        if waits:
            waits.stop()
        report = reconcile()
        self.stdout.write(
            f"\n{rounds} rounds: {', '.join(f'{name} won {tally[name]}' for name in demos)}, "
            f"rounds without exactly one winner: {tally['bad']}"
        )
        if len(races) > 1:
            self.stdout.write(f"raced two at a time: {'; '.join(' vs '.join(race) for race in races)}")
        self.stdout.write(
            f"{'both' if all(len(race) == 2 for race in races) else 'all'} purchases in flight at once in "
            f"{tally['overlapping']} of {rounds} rounds"
        )
        if waits:
            self.stdout.write(f"row-lock waits seen in PostgreSQL (pg_stat_activity samples): {waits.seen}")
        self.stdout.write(f"invariants: {'all hold' if report.ok else 'VIOLATED'}")
        if not report.ok or tally["bad"]:
            raise CommandError("the race broke a guarantee")

    def race_once(self, budget: int, demos: dict) -> list[Attempt]:
        User = get_user_model()
        customer = User.objects.create_user(username=f"race-{uuid.uuid4().hex[:12]}")
        wallet = billing_services.wallet_create(owner_id=customer.id, currency="EUR")
        billing_services.top_up_create(wallet_id=wallet.id, owner_id=customer.id, amount=budget)
        barrier = threading.Barrier(len(demos))

        def purchase(demo):
            return lambda: demo.race_purchase(owner_id=customer.id, wallet_id=wallet.id)

        attempts = [Attempt(name) for name in demos]
        threads = [
            threading.Thread(target=run_attempt, args=(attempt, purchase(demos[attempt.who]), barrier))
            for attempt in attempts
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return attempts


def _one_winner_races(prices: dict[str, int]) -> list[tuple[str, ...]]:
    """The races to run: all the contexts at once when a wallet of the dearest price
    affords any one purchase and never two; otherwise every pair of contexts for which
    that holds."""

    def one_winner(names: tuple[str, ...]) -> bool:
        ordered = sorted(prices[name] for name in names)
        return ordered[-1] < ordered[0] + ordered[1]

    everyone = tuple(prices)
    if one_winner(everyone):
        return [everyone]
    return [pair for pair in itertools.combinations(everyone, 2) if one_winner(pair)]


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
