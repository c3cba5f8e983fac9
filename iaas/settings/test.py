"""Settings for the test suite: PostgreSQL required (row locks are what we test), fast
password hashing, delivery on commit off unless a test turns it on."""

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
REST_FRAMEWORK = {**REST_FRAMEWORK}  # noqa: F405
