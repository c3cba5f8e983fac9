"""Rate limits on every endpoint, counted in the shared cache so that every process,
every gunicorn worker on every host, draws on one count per client.

Who is counted: an authenticated request per customer (scope ``user``), any other per
client address (scope ``anon``; the address is the socket's unless ``NUM_PROXIES`` says
how many proxies append to X-Forwarded-For). Registration and token issue keep scopes of
their own per address (``register``, ``token``). Rates come from
``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` (environment variables in the settings),
read on each request so a settings change (or a test's override) takes effect; a rate of
None turns the scope off.

How it counts: a fixed window. REST framework's SimpleRateThrottle reads a list of
timestamps and writes it back, which is not atomic: two processes may both read four
hits and both pass a limit of five. Here the count is one integer per client and window,
``throttle:<scope>:<ident>:<window number>``, raised by an atomic increment, so the
limit holds exactly however many processes share the cache. On Redis that is one round
trip per request: ``SET key 0 EX ttl NX`` and ``INCR key`` in one MULTI/EXEC pipeline
(the key always carries its expiry, and it names its window, so a count never outlives
it). On the database cache, ``incr`` (``add`` for a window's first hit) in one
transaction: exact on the embedded SQLite (every transaction IMMEDIATE, so writers take
turns); on PostgreSQL concurrent hits of one client may be undercounted (incr reads,
then writes) and each request costs about six statements: set REDIS_URL when you run
several processes. The price of a fixed window: a client may spend a window's limit at
its end and the next window's at its start. ``Retry-After`` on the 429 is the
time left in the window (iaas/api/problems.py writes the header).

A Redis that cannot be reached lets the request through, logged: a limit is protection,
not correctness, and the money paths must not stop with the cache.
"""

from __future__ import annotations

import logging
import math
import time

from django.core.cache import caches
from django.core.cache.backends.db import BaseDatabaseCache
from django.core.cache.backends.redis import RedisCache
from django.db import router, transaction
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)

CACHE_ALIAS = "default"


def hit(key: str, *, ttl: int) -> int:
    """Count one hit on ``key`` (created with this time to live if new) and return the
    count, atomically across every process sharing the cache."""
    cache = caches[CACHE_ALIAS]
    if isinstance(cache, RedisCache):
        full_key = cache.make_and_validate_key(key)
        # The cache's own client and connection pool (Django exposes no public handle).
        client = cache._cache.get_client(full_key, write=True)
        pipe = client.pipeline(transaction=True)
        pipe.set(full_key, 0, ex=ttl, nx=True)
        pipe.incr(full_key)
        _, count = pipe.execute()
        return int(count)
    if isinstance(cache, BaseDatabaseCache):
        # incr is a read then a write: one transaction, which SQLite (every transaction
        # IMMEDIATE) serialises; PostgreSQL does not (see the module's docstring).
        with transaction.atomic(using=router.db_for_write(cache.cache_model_class)):
            return _add_or_incr(cache, key, ttl)
    return _add_or_incr(cache, key, ttl)


def _add_or_incr(cache, key: str, ttl: int) -> int:
    """incr first: most hits find the window's key (the database cache's add of an
    existing key costs a failed INSERT on top of incr's statements)."""
    try:
        return cache.incr(key)
    except ValueError:  # the window's first hit
        if cache.add(key, 1, ttl):
            return 1
        return cache.incr(key)  # another process added it first


class WindowThrottle(SimpleRateThrottle):
    """A fixed-window limit of ``num_requests`` per ``duration`` seconds for one scope;
    subclasses say whom a request counts against (``get_ident_key``; None: not counted
    by this scope)."""

    def __init__(self) -> None:
        super().__init__()
        self.wait_seconds: float | None = None

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_ident_key(self, request) -> str | None:
        return self.get_ident(request)

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        ident = self.get_ident_key(request)
        if ident is None:
            return True
        now = time.time()
        window = int(now // self.duration)
        window_end = (window + 1) * self.duration
        key = f"throttle:{self.scope}:{ident}:{window}"
        try:
            count = hit(key, ttl=math.ceil(window_end - now) + 1)
        except (RedisConnectionError, RedisTimeoutError) as error:
            logger.warning("throttle %s not counted, cache unreachable: %s", self.scope, error)
            return True
        if count <= self.num_requests:
            return True
        self.wait_seconds = window_end - now
        return False

    def wait(self) -> float | None:
        return self.wait_seconds


class CustomerThrottle(WindowThrottle):
    """Every endpoint, an authenticated request: counted per customer."""

    scope = "user"

    def get_ident_key(self, request) -> str | None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        return str(user.pk)


class AddressThrottle(WindowThrottle):
    """Every endpoint, an anonymous request: counted per client address."""

    scope = "anon"

    def get_ident_key(self, request) -> str | None:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return None
        return self.get_ident(request)


class RegisterThrottle(WindowThrottle):
    """Registration, per client address (slows sign-up floods)."""

    scope = "register"


class TokenThrottle(WindowThrottle):
    """Token issue, per client address (slows password guessing)."""

    scope = "token"
