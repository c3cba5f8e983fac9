"""Real threads, each with its own database connection, started at one barrier."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.db import connection, connections


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


@pytest.fixture(autouse=True)
def _postgres_only():
    assert connection.vendor == "postgresql", "concurrency tests need PostgreSQL's row locks"
