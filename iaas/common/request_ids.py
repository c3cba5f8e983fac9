"""The id of the request (or task) being served, for logs and for the tasks it causes.

A request takes the ``X-Request-ID`` its proxy sent (when it looks like an id) or a new
one; a task published while it is current carries it in the message's headers, and the
task's worker makes it current while the task runs, so one id follows a purchase from
the HTTP request into every log line of the background work it started."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

HEADER = "X-Request-ID"
_VALID = re.compile(r"[A-Za-z0-9._:-]{8,64}")
_current: ContextVar[str] = ContextVar("iaas_request_id", default="")


def current() -> str:
    """The current id, or "" outside any request or task."""
    return _current.get()


def new() -> str:
    return uuid.uuid4().hex


def accepted(value: str | None) -> str | None:
    """``value`` if it is a usable id (8 to 64 of letters, digits and ``._:-``), else None:
    a client never writes arbitrary text into our logs."""
    if value and _VALID.fullmatch(value):
        return value
    return None


@contextmanager
def bound(request_id: str) -> Iterator[str]:
    token = _current.set(request_id)
    try:
        yield request_id
    finally:
        _current.reset(token)
