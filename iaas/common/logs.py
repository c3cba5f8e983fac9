"""What every log line carries besides its message: the id of the request or task it was
written for (``iaas.common.request_ids``), so that one purchase's lines, and those of
the background work it started, are found together. Set on the handlers in LOGGING
(a filter on a handler sees the records every logger propagates to it)."""

from __future__ import annotations

import logging

from . import request_ids


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id``: the current id; else the id of the request the record
    names (Django logs a response's status after the middleware that made the id current
    has returned: ``django.request``'s records carry the request); else ``missing``
    (``-`` in plain text; None, JSON's null, by default)."""

    def __init__(self, name: str = "", missing: str | None = None) -> None:
        super().__init__(name)
        self.missing = missing

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = (
            request_ids.current()
            or getattr(getattr(record, "request", None), "request_id", None)
            or self.missing
        )
        return True
