"""Real threads, each with its own database connection, started at one barrier: what
the concurrency tests and the tests of two batch runs at once share."""

from __future__ import annotations

import threading
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
