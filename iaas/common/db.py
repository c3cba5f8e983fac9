"""Transactions with bounded retries, and small SQL helpers every context uses."""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

from django.conf import settings
from django.db import OperationalError, connection, transaction

from iaas.contracts.errors import DomainError, ServiceBusy

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# deadlock_detected, lock_not_available (lock_timeout), serialization_failure
RETRYABLE_SQLSTATES = {"40P01", "55P03", "40001"}


def is_retryable(error: BaseException) -> bool:
    cause = error.__cause__ or error
    sqlstate = getattr(cause, "sqlstate", None) or getattr(getattr(cause, "diag", None), "sqlstate", None)
    if sqlstate in RETRYABLE_SQLSTATES:
        return True
    # SQLite: "database is locked" after the busy timeout.
    return connection.vendor == "sqlite" and "locked" in str(error)


# Set while a unit of work runs whose errors always leave the transaction around it,
# which then rolls back (the idempotency layer's): a service inside needs no savepoint.
_errors_end_transaction: ContextVar[bool] = ContextVar("errors_end_transaction", default=False)


@contextmanager
def errors_end_the_transaction() -> Iterator[None]:
    """Run a unit of work whose exceptions always propagate out of the transaction around
    it, which then rolls back (the idempotency layer runs a request's work so). A
    ``retry_transaction`` service called directly inside opens no savepoint of its own:
    two statements (SAVEPOINT, RELEASE) fewer per request."""
    token = _errors_end_transaction.set(True)
    try:
        yield
    finally:
        _errors_end_transaction.reset(token)


def retry_transaction(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` in its own transaction; on a deadlock or lock timeout roll back and run
    it again, a bounded number of times, then raise ServiceBusy (answered with a 503).

    Must be the outermost transaction: a retry inside an outer one cannot undo the
    outer transaction's work, so there it just runs once, in a savepoint (so that a
    caller catching its error can go on), or with none inside
    ``errors_end_the_transaction``.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if connection.in_atomic_block:
            own_savepoint = not _errors_end_transaction.get()
            token = _errors_end_transaction.set(False)  # what it calls opens savepoints as usual
            try:
                with transaction.atomic(savepoint=own_savepoint):
                    return func(*args, **kwargs)
            finally:
                _errors_end_transaction.reset(token)
        attempts = settings.IAAS_TRANSACTION_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                with transaction.atomic():
                    return func(*args, **kwargs)
            except DomainError as error:
                run_after_rollback(error)
                raise
            except OperationalError as error:
                if not is_retryable(error):
                    raise
                logger.info("retrying %s after %s (attempt %d)", func.__qualname__, error, attempt)
                if attempt == attempts:
                    raise ServiceBusy() from error
                time.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311 (jitter, not crypto)
        raise AssertionError("unreachable")

    return wrapper


def run_after_rollback(error: DomainError) -> None:
    """Run the follow-up work a refusal asked for, each in its own (nested) transaction.
    It is advisory (a release request): a failure is logged, never raised."""
    callbacks, error.after_rollback = error.after_rollback, []
    for callback in callbacks:
        try:
            with transaction.atomic():
                callback()
        except Exception:
            logger.exception("follow-up work after a refused transaction failed")
