"""Fault-injection points for the kill tests: a batch can be made to wait inside its
open transaction, after its writes and before its commit, so a test can SIGKILL the
worker exactly there. Off unless the environment names the point (never in production
settings: the variable is read at the point, so nothing is configured by default)."""

from __future__ import annotations

import os
import time


def pause_point(name: str) -> None:
    """Sleep here for ``IAAS_PAUSE_IN_<NAME>`` seconds when that variable is set."""
    seconds = os.environ.get(f"IAAS_PAUSE_IN_{name.upper()}")
    if seconds:
        time.sleep(float(seconds))
