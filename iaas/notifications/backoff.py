"""When a failed webhook delivery or email is tried again: exponential backoff with
jitter, the same rule for both."""

from __future__ import annotations

import datetime as dt
import random

JITTER = 0.2  # each delay is 80% to 120% of its base


def jittered_backoff(attempts: int, *, first: float, cap: float) -> dt.timedelta:
    """After the ``attempts``-th failure: ``first`` seconds, then four times longer each
    time, at most ``cap`` seconds, each ±20% (so what failed together does not all come
    back at once)."""
    base = min(cap, first * 4 ** max(attempts - 1, 0))
    return dt.timedelta(seconds=base * random.uniform(1 - JITTER, 1 + JITTER))  # noqa: S311 (jitter, not a secret)
