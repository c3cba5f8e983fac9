"""Real threads, each with its own database connection, started at one barrier: what
the concurrency tests and the tests of two batch runs at once share; and what
PostgreSQL saw of them (its deadlock counter, their backends)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import connections


@dataclass
class Outcome:
    value: object = None
    error: BaseException | None = None
    extra: dict = field(default_factory=dict)


def run_at_once(*calls: Callable[[], object], timeout: float = 60) -> list[Outcome]:
    """Run each call in its own thread, all released at the same instant."""
    barrier = threading.Barrier(len(calls))
    outcomes = [Outcome() for _ in calls]

    def run(call, outcome):
        try:
            barrier.wait(timeout)
            outcome.value = call()
        except BaseException as error:  # reported to the test, never swallowed
            outcome.error = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=pair) for pair in zip(calls, outcomes, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a thread hung"
    return outcomes


# --- What PostgreSQL saw: the deadlock counter, and the backends of a test's threads -----


def backend_pid() -> int:
    """This thread's PostgreSQL backend (its connection's server process)."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def wait_for_backends_to_exit(pids, timeout: float = 30) -> None:
    """Wait until these backends are gone. A backend flushes its statistics (the deadlock
    count among them) lazily while it lives, and always when it exits: once the threads'
    connections are closed and their backends gone, pg_stat_database has every deadlock
    they met."""
    deadline = time.monotonic() + timeout
    pids = list(pids)
    while True:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids])
            if cursor.fetchone()[0] == 0:
                return
        assert time.monotonic() < deadline, f"backends {pids} still there after {timeout} s"
        time.sleep(0.05)


def deadlocks_detected() -> int:
    """pg_stat_database.deadlocks of the test database: deadlocks PostgreSQL detected
    (and broke by failing one transaction) since the statistics were reset. The
    statistics snapshot is cleared first, so a reading inside one transaction is fresh
    too; read it after ``wait_for_backends_to_exit`` (statistics arrive asynchronously)."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]
