"""Production settings: everything secret or host-specific comes from the environment,
and the app refuses to start with the development secret key."""

import os

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import (
    DEVELOPMENT_SECRET_KEY,
    IAAS_OUTGOING_ALLOW_PRIVATE,
    IAAS_STRIPE_API_BASE,
    IAAS_STRIPE_PUBLISHABLE_KEY,
    IAAS_STRIPE_SECRET_KEY,
    IAAS_STRIPE_WEBHOOK_SECRETS,
    LOGGING,
    SECRET_KEY,
    env_bool,
    env_list,
)

DEBUG = False

if not SECRET_KEY or SECRET_KEY == DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 50:
    raise ImproperlyConfigured(
        "Production needs its own SECRET_KEY (at least 50 random characters) in the environment."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("Production needs ALLOWED_HOSTS (comma-separated) in the environment.")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]  # probed over plain HTTP, from inside
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Real payments only: the sandbox provider must be chosen explicitly.
IAAS_PAYMENT_PROVIDER = os.environ.get("IAAS_PAYMENT_PROVIDER", "manual")
if IAAS_PAYMENT_PROVIDER == "stripe":
    if not (IAAS_STRIPE_SECRET_KEY and IAAS_STRIPE_PUBLISHABLE_KEY and IAAS_STRIPE_WEBHOOK_SECRETS):
        raise ImproperlyConfigured(
            "IAAS_PAYMENT_PROVIDER=stripe needs IAAS_STRIPE_SECRET_KEY, IAAS_STRIPE_PUBLISHABLE_KEY "
            "and IAAS_STRIPE_WEBHOOK_SECRET (README, 'Card payments with Stripe')."
        )
    if not IAAS_STRIPE_API_BASE.startswith("https://"):
        raise ImproperlyConfigured("IAAS_STRIPE_API_BASE must be an https:// address in production.")

# Settlement off the request path: a purchase answers once it commits, and the delivery
# worker that production runs in any case (deliver_events --loop: it is what guarantees
# delivery) settles its charge, many of a wallet's charges per transaction. Settling in
# the request doubled a purchase's statements and halved its throughput over HTTP
# (BENCHMARKS.md, "The purchase path at its statement floor"). Development keeps it on,
# so `make run` settles with no worker beside it.
IAAS_DELIVER_ON_COMMIT = env_bool("IAAS_DELIVER_ON_COMMIT", False)

# Webhook signing secrets are encrypted with these keys; without them nothing could sign.
if not env_list("IAAS_SECRET_KEYS", []):
    raise ImproperlyConfigured(
        "Production needs IAAS_SECRET_KEYS (Fernet keys, comma-separated; make one with "
        "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)."
    )
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")

# Requests to customers' addresses go to public addresses only, over TLS: a webhook URL
# pointing at loopback or the private network would let a customer reach our insides.
if IAAS_OUTGOING_ALLOW_PRIVATE:
    raise ImproperlyConfigured(
        "IAAS_OUTGOING_ALLOW_PRIVATE is for development only: production sends requests to "
        "globally routable addresses only."
    )
IAAS_OUTGOING_REQUIRE_HTTPS = True

# seed_demo's operators have known passwords and printed second factors.
IAAS_DEMO_DATA_ALLOWED = False

# One JSON object a line, for the log shipper: timestamp (UTC, ISO 8601), level, logger,
# message, request_id (null outside a request or task), exc_info (the traceback, when
# there is one), and whatever a call passed in ``extra``.
LOGGING = {
    **LOGGING,
    "filters": {"request_id": {"()": "iaas.common.logs.RequestIdFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": True,
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"]},
    },
}
