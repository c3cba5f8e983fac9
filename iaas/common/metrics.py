"""The business counters the processes that sell increment: purchases and refused
purchases per selling context. They live here, not with the collector of
``iaas.operations.metrics``, because the selling contexts and their kit may import the
shared libraries and never the composition root.

Counted at the purchase views (``counts_purchases``), under the idempotency layer: a
purchase when its transaction commits, a refusal by its domain error's code, and a
replayed answer not at all (its work did not run again). Counters are per process;
with ``PROMETHEUS_MULTIPROC_DIR`` set, prometheus_client writes them to files there
and the scrape adds every worker's up."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.db import transaction
from prometheus_client import Counter

from iaas.contracts.errors import DomainError, ServiceBusy

PURCHASES = Counter(
    "iaas_purchases",
    "Purchases committed, by selling context (a service bought over the API; a replayed "
    "Idempotency-Key answer is not counted again).",
    ["context"],
)
PURCHASE_REFUSALS = Counter(
    "iaas_purchase_refusals",
    "Purchases refused, by selling context and the refusal's problem code "
    "(insufficient_funds, wallet_not_active, currency_mismatch, not_found, ...). A busy "
    "database is not a refusal: it shows as 503s in the request metrics.",
    ["context", "reason"],
)


def purchase_committed(context: str) -> None:
    """Count a purchase once the transaction it runs in commits (at once outside one):
    a purchase rolled back after the service returned (its answer could not be stored)
    is not counted."""
    transaction.on_commit(PURCHASES.labels(context).inc)


def purchase_refused(context: str, error: DomainError) -> None:
    if not isinstance(error, ServiceBusy):
        PURCHASE_REFUSALS.labels(context, error.code).inc()


def counts_purchases(view_method: Callable) -> Callable:
    """Decorate a purchase view's ``post`` (beneath ``@idempotent``, so that a replay is
    not counted): a success counts a purchase of ``view.purchase_context``, a domain
    error a refusal. Nothing else per purchase: one on_commit callback."""

    @functools.wraps(view_method)
    def wrapper(view, request, *args, **kwargs):
        try:
            response = view_method(view, request, *args, **kwargs)
        except DomainError as error:
            purchase_refused(view.purchase_context, error)
            raise
        purchase_committed(view.purchase_context)
        return response

    return wrapper
