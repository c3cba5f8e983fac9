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

# The task engine's tests run real Celery workers on the real RabbitMQ (the suite needs it
# as it needs PostgreSQL and Redis: without it those tests fail, never skip), on queues of
# the test database's own, so parallel runs against one broker never share a message.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "amqp://guest:guest@127.0.0.1:5672//"
IAAS_TASK_QUEUE_PREFIX = (
    os.environ.get("IAAS_TASK_QUEUE_PREFIX") or f"iaas-test.{DATABASES['default']['NAME']}"
)
# Subscriptions outside the money transaction (customers' notifications) are applied by
# deliver_pending in-process, as where no broker is configured, so the suite's "nothing
# left pending" checks hold; the relay's tests turn the relay on (tests/tasks/test_relay.py).
IAAS_RELAY_EVENTS = False
# Two partition queues, four partitions: a run's parts share queues, as in production.
IAAS_TASK_PARTITION_QUEUES = 2
IAAS_TASK_PARTITIONS = 4
# A small delivery limit and quick retries, so a poison message dies within a test.
IAAS_TASK_DELIVERY_LIMIT = 2
IAAS_TASK_MAX_RETRIES = 1
IAAS_TASK_RETRY_DELAY_SECONDS = 1

# Emails stay in django.core.mail.outbox.
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Requests to customers' addresses: the webhook tests run real receivers on loopback, over
# plain HTTP. Tests of the address rules turn ALLOW_PRIVATE off for themselves.
IAAS_OUTGOING_ALLOW_PRIVATE = True
IAAS_OUTGOING_REQUIRE_HTTPS = False
