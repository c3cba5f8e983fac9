"""Fault-injection points for the kill tests and the cluster scenarios: a batch can be
made to wait inside its open transaction, after its writes and before its commit, so a
test can SIGKILL the worker exactly there; a message can be published twice. Off unless
the environment names the point (never in production settings: the variable is read at
the point, so nothing is configured by default)."""

from __future__ import annotations

import os
import time


def pause_point(name: str) -> None:
    """Sleep here for ``IAAS_PAUSE_IN_<NAME>`` seconds when that variable is set."""
    seconds = os.environ.get(f"IAAS_PAUSE_IN_{name.upper()}")
    if seconds:
        time.sleep(float(seconds))


def repeat(name: str) -> int:
    """How many times to do ``name`` (publish a message): ``IAAS_REPEAT_<NAME>``, default
    once. The cluster scenario "every message published twice" sets it to 2."""
    return max(1, int(os.environ.get(f"IAAS_REPEAT_{name.upper()}", "1")))


class InjectedFault(RuntimeError):
    """Raised at a fail point the environment named: a bug deployed, for a scenario."""


def fail_point(name: str) -> None:
    """Raise InjectedFault here when ``IAAS_FAIL_IN_<NAME>`` is set (to anything but 0)."""
    if os.environ.get(f"IAAS_FAIL_IN_{name.upper()}", "0") not in ("", "0"):
        raise InjectedFault(f"fault injected at {name} (IAAS_FAIL_IN_{name.upper()})")
