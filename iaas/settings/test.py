"""Settings for the test suite: PostgreSQL required (row locks are what we test), fast
password hashing, delivery on commit off unless a test turns it on."""

import os

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import DATABASES

if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured(
        "The test suite runs on PostgreSQL only (select_for_update is a no-op on SQLite). "
        "Set DATABASE_URL, or use `make test`, which finds or starts a PostgreSQL."
    )

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
IAAS_DELIVER_ON_COMMIT = False
# Usage accrued is closed by every settlement run (the cadence itself has its own tests):
# a metering run followed by a settlement run leaves a charge per run, easy to assert on.
IAAS_SETTLE_USAGE_EVERY_HOURS = 0
REST_FRAMEWORK = {**REST_FRAMEWORK}  # noqa: F405

# Throttles count in Redis, as in production (the suite needs it as it needs PostgreSQL:
# a test that meets no Redis fails, it is never skipped), under a key prefix of the test
# database's own, so parallel runs against one Redis never share a counter and a test
# clears only its own keys (tests/conftest.py), never the whole Redis.
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
IAAS_CACHE_KEY_PREFIX = f"iaas-test:{DATABASES['default']['NAME']}"
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": IAAS_CACHE_KEY_PREFIX,
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 5},
    }
}
