"""Idempotency keys for POSTs (API.md; ARCHITECTURE.md, "Idempotent requests").

A request with an ``Idempotency-Key`` runs in one transaction that first takes
``pg_try_advisory_xact_lock`` on a hash of (customer, method, path, key), the first
lock in the project's lock order:

- not acquired: the same request is running: 409 ``idempotency_request_in_progress``,
  nothing stored;
- acquired and a response is stored: replay it (``Idempotent-Replayed: true``), or 422
  ``idempotency_key_reused`` when the body's fingerprint differs;
- otherwise the work runs in that transaction, with no savepoint around it. A success
  (2xx) is stored in the same transaction that commits the work, so a charge never
  exists without its key nor a key without its charge. A storable refusal (402, 404,
  409) rolls the whole transaction back; its follow-up work (a release request) runs,
  then a second transaction takes the key's lock again and stores the refusal, unless
  another request with the key answered in between (the lock went with the rollback):
  then that answer is replayed. So the common case, a success, costs no SAVEPOINT and
  RELEASE, and each key still has one stored answer, which the work it answers agrees
  with. A 400 or a 5xx is not stored: the whole transaction rolls back and the client
  may correct the request and retry with the same key.

On SQLite every transaction takes the database's write lock up front, which
serialises such requests: a duplicate waits and then replays.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from iaas.common.db import errors_end_the_transaction, retry_transaction, run_after_rollback
from iaas.contracts import statements
from iaas.contracts.errors import DomainError

from .models import IdempotencyKey
from .problems import PROBLEM_CONTENT_TYPE, ProblemError, response_for_exception

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# 1 to 255 visible ASCII characters, spaces allowed inside (a UUID is a good key).
KEY_PATTERN = r"\A[!-~](?:[ -~]{0,253}[!-~])?\Z"
_KEY_RE = re.compile(KEY_PATTERN)


class IdempotencyKeyReused(ProblemError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was used with a different request body."


class IdempotencyRequestInProgress(ProblemError):
    status_code = status.HTTP_409_CONFLICT
    default_code = "idempotency_request_in_progress"
    default_detail = "A request with this Idempotency-Key is still being processed; retry shortly."


def ttl() -> dt.timedelta:
    return dt.timedelta(seconds=settings.IAAS_IDEMPOTENCY_KEY_TTL)


def is_storable(status_code: int) -> bool:
    return 200 <= status_code < 300 or status_code in (402, 404, 409)


@dataclass(frozen=True)
class Scope:
    owner_id: int
    method: str
    path: str
    key: str

    def lock_id(self) -> int:
        """A signed 64-bit advisory lock id for this scope."""
        material = "\x1f".join([str(self.owner_id), self.method, self.path, self.key]).encode()
        return int.from_bytes(hashlib.sha256(material).digest()[:8], "big", signed=True)

    def stored(self, *, expired_before: dt.datetime) -> StoredResponse | None:
        """The response stored under this scope: one SELECT on the unique key, in SQL (every
        keyed POST runs it; the ORM's query building cost more than the query), the
        expiry judged in the same statement."""
        table = connection.ops.quote_name(IdempotencyKey._meta.db_table)
        created_at = IdempotencyKey._meta.get_field("created_at")
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, fingerprint, status_code, response_body, created_at <= %s FROM {table} "  # noqa: S608
                f"WHERE owner_id = %s AND method = %s AND path = %s AND key = %s",
                [
                    created_at.get_db_prep_value(expired_before, connection),
                    self.owner_id,
                    self.method,
                    self.path,
                    self.key,
                ],
            )
            row = cursor.fetchone()
        return None if row is None else StoredResponse(*row[:4], expired=bool(row[4]))


@dataclass(frozen=True)
class StoredResponse:
    """A stored response, as a replay needs it."""

    id: int
    fingerprint: str
    status_code: int
    response_body: str
    expired: bool


def fingerprint(request: Request) -> str:
    """Method, path and the parsed JSON body: the same JSON in other bytes (spacing, key
    order) is the same request."""
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{request.method}\n{request.path}\n{body}".encode()).hexdigest()


def idempotent(view_method: Callable) -> Callable:
    """Decorate an authenticated view's ``post`` to honour the Idempotency-Key header."""

    @functools.wraps(view_method)
    def wrapper(view, request: Request, *args, **kwargs) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return view_method(view, request, *args, **kwargs)
        if not _KEY_RE.match(key):
            raise ValidationError({HEADER: ["An Idempotency-Key is 1 to 255 visible ASCII characters."]})
        scope = Scope(owner_id=request.user.pk, method=request.method, path=request.path, key=key)
        return _run(scope, fingerprint(request), lambda: view_method(view, request, *args, **kwargs))

    wrapper.idempotent = True
    return wrapper


def idempotent_in_its_first_step(view_method: Callable) -> Callable:
    """Mark a POST that honours the Idempotency-Key through its first step, an
    ``@idempotent`` method that commits what it opens (a pending top-up) with the stored
    answer, and then calls a payment provider outside any transaction: a replay answers
    the same object and the POST carries it on. For the schema, which documents the
    header on idempotent operations."""
    view_method.idempotent = True
    return view_method


def _run(scope: Scope, request_fingerprint: str, work: Callable[[], Response]) -> Response:
    # One transaction, retried a bounded number of times on a deadlock or lock timeout
    # (then a 503), like every other write. A storable refusal rolls it back whole and is
    # stored by a second one.
    try:
        return retry_transaction(_attempt)(scope, request_fingerprint, work)
    except _StorableRefusal as refusal:
        if isinstance(refusal.error, DomainError):
            run_after_rollback(refusal.error)  # e.g. ask other services to release idle allowance
        return retry_transaction(_store_refusal)(scope, request_fingerprint, refusal.response)


class _StorableRefusal(Exception):
    """The work ended in a storable error (402, 404, 409): raised out of the work's
    transaction, which rolls back with everything the work wrote."""

    def __init__(self, response: Response, error: Exception) -> None:
        super().__init__(response.status_code)
        self.response, self.error = response, error


def _acquire(scope: Scope) -> bool:
    if connection.vendor != "postgresql":
        return True  # SQLite: this transaction already holds the database's write lock
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [scope.lock_id()])
        return bool(cursor.fetchone()[0])


def _lock_and_replay(scope: Scope, request_fingerprint: str) -> Response | None:
    """Take the key's lock (409 when another request holds it) and answer what is
    stored under it: its replay, a 422 for another body, or None when nothing is."""
    if not _acquire(scope):
        raise IdempotencyRequestInProgress()
    record = scope.stored(expired_before=timezone.now() - ttl())
    if record is not None and record.expired:
        IdempotencyKey.objects.filter(pk=record.id).delete()  # expired: the key starts afresh
        record = None
    if record is None:
        return None
    if record.fingerprint != request_fingerprint:
        raise IdempotencyKeyReused()
    return replay(record)


def _attempt(scope: Scope, request_fingerprint: str, work: Callable[[], Response]) -> Response:
    replayed = _lock_and_replay(scope, request_fingerprint)
    if replayed is not None:
        return replayed
    try:
        with errors_end_the_transaction():
            response = work()
    except Exception as error:
        response = response_for_exception(error)
        if response is None or not is_storable(response.status_code):
            raise
        raise _StorableRefusal(response, error) from error
    if not is_storable(response.status_code):
        # A view that answered an error without raising: undo whatever it did.
        transaction.set_rollback(True)
        return response
    store(scope, request_fingerprint, response)
    return response


def _store_refusal(scope: Scope, request_fingerprint: str, response: Response) -> Response:
    """Store a refusal whose work rolled back, under the key's lock again. Another
    request with the key may have run in between (the lock was released with the
    rollback): then its stored answer is the key's, and this one replays it."""
    replayed = _lock_and_replay(scope, request_fingerprint)
    if replayed is not None:
        return replayed
    store(scope, request_fingerprint, response)
    return response


def store(scope: Scope, request_fingerprint: str, response: Response) -> None:
    """Store the response under the scope, in the transaction of the work it answers:
    one INSERT (no id read back: nothing needs it)."""
    record = IdempotencyKey(
        owner_id=scope.owner_id,
        method=scope.method,
        path=scope.path,
        key=scope.key,
        fingerprint=request_fingerprint,
        status_code=response.status_code,
        response_body=json.dumps(response.data, cls=JSONEncoder, ensure_ascii=False),
    )
    statements.run_together(statements.insert(record))


def replay(record: StoredResponse) -> Response:
    return Response(
        json.loads(record.response_body),
        status=record.status_code,
        headers={REPLAYED_HEADER: "true"},
        content_type=PROBLEM_CONTENT_TYPE if record.status_code >= 400 else None,
    )


def purge_expired(*, now: dt.datetime | None = None) -> int:
    """Delete stored responses older than the replay window. Returns how many."""
    cutoff = (now or timezone.now()) - ttl()
    deleted, _ = IdempotencyKey.objects.filter(created_at__lte=cutoff).delete()
    return deleted
