"""Settings shared by every environment. Values that differ come from the environment."""

from __future__ import annotations

import os
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"  # git-ignored: the embedded SQLite database, static files


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEVELOPMENT_SECRET_KEY = "django-insecure-development-only-never-use-in-production"  # noqa: S105
SECRET_KEY = os.environ.get("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])

INSTALLED_APPS = [
    "iaas.operations.admin_site.OperatorAdminConfig",  # django.contrib.admin, with 2FA
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served by the app (no CDN)
    "django_otp",
    "django_otp.plugins.otp_totp",  # operators' authenticator apps
    "django_otp.plugins.otp_static",  # their recovery codes
    "axes",  # failed admin login limits
    # The contexts. contracts first: it owns the outbox every context publishes into.
    "iaas.contracts",
    "iaas.billing",
    "iaas.cloud",
    "iaas.hosting",
    "iaas.storage",
    # Customers' webhooks and emails: subscribes to events only, like any context.
    "iaas.notifications",
    "iaas.api",
    "iaas.operations",
    # The history of operators' changes: a shared library (after django.contrib.auth,
    # whose UserAdmin it replaces with one that records group changes).
    "iaas.audit",
]

MIDDLEWARE = [
    # Request metrics for /metrics (django-prometheus): its pair first and last, so that
    # they time and count everything in between.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # Every request under an id (X-Request-ID) that its log lines and tasks carry.
    "iaas.common.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A bad API key is a 401 on the public endpoints too (iaas.api.authentication).
    "iaas.api.authentication.RejectBadCredentialsMiddleware",
    "axes.middleware.AxesMiddleware",  # turns a lockout into the lockout page
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "iaas.urls"
WSGI_APPLICATION = "iaas.wsgi.application"
ASGI_APPLICATION = "iaas.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "iaas" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


# --- Database -----------------------------------------------------------------------
# PostgreSQL (psycopg 3) from DATABASE_URL is the production database. Without it the
# app runs on an embedded SQLite file. select_for_update is a no-op on SQLite, so there
# every transaction starts IMMEDIATE (takes the write lock up front) and waits for a
# busy lock instead of failing: writers are serialised, which keeps the money correct.
LOCK_TIMEOUT_MS = int(os.environ.get("IAAS_LOCK_TIMEOUT_MS", "3000"))
STATEMENT_TIMEOUT_MS = int(os.environ.get("IAAS_STATEMENT_TIMEOUT_MS", "30000"))
# A transaction left open by a client that vanished (an app host cut off mid-request, a
# process frozen) is ended by PostgreSQL after this long, so the row locks it holds are
# not held until TCP gives up (hours). Well above any transaction's own length; 0 is off.
IDLE_IN_TRANSACTION_TIMEOUT_MS = int(os.environ.get("IAAS_IDLE_IN_TRANSACTION_TIMEOUT_MS", "60000"))


def database_from_environment() -> dict:
    url = os.environ.get("DATABASE_URL")
    if not url:
        VAR_DIR.mkdir(exist_ok=True)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("IAAS_SQLITE_PATH") or VAR_DIR / "db.sqlite3",
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    config = dj_database_url.parse(url, conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")))
    if config["ENGINE"] == "django.db.backends.postgresql":
        # A lock we cannot get soon is retried by the caller, then answered with a 503:
        # never an unbounded wait. Statement timeout bounds a runaway query.
        config.setdefault("OPTIONS", {})["options"] = (
            f"-c lock_timeout={LOCK_TIMEOUT_MS} -c statement_timeout={STATEMENT_TIMEOUT_MS} "
            f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"
        )
        config["CONN_HEALTH_CHECKS"] = True
        if env_bool("IAAS_DB_SERVER_SIDE_BINDING", False):
            # psycopg binds parameters on the server and prepares a statement after its
            # fifth execution (BENCHMARKS.md: what it bought).
            config["OPTIONS"]["server_side_binding"] = True
        if env_bool("IAAS_DB_POOL", False):
            # Django's psycopg connection pool (needs the psycopg-pool package) instead of
            # a persistent connection per worker; measured, not kept (BENCHMARKS.md).
            config["OPTIONS"]["pool"] = True
            config["CONN_MAX_AGE"] = 0
        config["TEST"] = {"NAME": os.environ.get("IAAS_TEST_DATABASE_NAME") or None}
    return config


DATABASES = {"default": database_from_environment()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))

# Request bodies: the API takes small JSON documents; anything larger is refused.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("IAAS_MAX_BODY_BYTES", str(64 * 1024)))


# --- The billing domain ---------------------------------------------------------------
# Currencies a wallet may hold (upper-case ISO 4217).
IAAS_SUPPORTED_CURRENCIES = env_list("IAAS_SUPPORTED_CURRENCIES", ["EUR", "USD", "GBP"])
# Largest single top-up in minor units (1,000,000.00): far above any real prepayment,
# far below the bigint limit, so no sum of top-ups can come near an overflow.
IAAS_MAX_TOP_UP = int(os.environ.get("IAAS_MAX_TOP_UP", "100000000"))
# The payment provider for top-ups: "sandbox" succeeds at once; "manual" leaves the
# top-up pending until an operator confirms it; "stripe" takes cards (below); or a dotted
# path to a provider class (iaas.billing.payments).
IAAS_PAYMENT_PROVIDER = os.environ.get("IAAS_PAYMENT_PROVIDER", "sandbox")
# Stripe (README, "Card payments with Stripe"): the secret key (sk_live_/sk_test_ or a
# restricted rk_ key), the publishable key the customer's browser uses (handed out with a
# top-up's client_secret), the webhook endpoint's signing secret (whsec_, one or more,
# comma-separated, while an endpoint secret is rolled), and the tolerance of a webhook's
# timestamp (Stripe's default, 300 s). The API base is a setting for tests only.
IAAS_STRIPE_SECRET_KEY = os.environ.get("IAAS_STRIPE_SECRET_KEY", "")
IAAS_STRIPE_PUBLISHABLE_KEY = os.environ.get("IAAS_STRIPE_PUBLISHABLE_KEY", "")
IAAS_STRIPE_WEBHOOK_SECRETS = env_list("IAAS_STRIPE_WEBHOOK_SECRET", [])
IAAS_STRIPE_WEBHOOK_TOLERANCE = int(os.environ.get("IAAS_STRIPE_WEBHOOK_TOLERANCE", "300"))
IAAS_STRIPE_API_BASE = os.environ.get("IAAS_STRIPE_API_BASE", "https://api.stripe.com")
# Seconds to connect to Stripe and to wait for an answer; retries of a failed call (with
# the same idempotency key: the client adds it) before the call is given up.
IAAS_STRIPE_CONNECT_TIMEOUT = float(os.environ.get("IAAS_STRIPE_CONNECT_TIMEOUT", "3"))
IAAS_STRIPE_READ_TIMEOUT = float(os.environ.get("IAAS_STRIPE_READ_TIMEOUT", "20"))
IAAS_STRIPE_NETWORK_RETRIES = int(os.environ.get("IAAS_STRIPE_NETWORK_RETRIES", "2"))
# A pending top-up older than this is reported by reconcile (the customer never paid, or
# the provider's answer was lost).
IAAS_TOP_UP_PENDING_REPORT_AFTER_SECONDS = int(
    os.environ.get("IAAS_TOP_UP_PENDING_REPORT_AFTER_SECONDS", "86400")
)
# Automatic top-ups (iaas.billing.payments.auto) a wallet may start in any 24 hours, refused
# attempts included: a card that keeps being declined is charged at most this often, and
# its owner told at most this often.
IAAS_AUTO_TOP_UP_DAILY_ATTEMPTS = int(os.environ.get("IAAS_AUTO_TOP_UP_DAILY_ATTEMPTS", "3"))
# Refusals in a row (declined, authentication required) after which automatic top-ups
# stop until the owner sets them up again: two days at the daily cap.
IAAS_AUTO_TOP_UP_GIVE_UP_AFTER = int(os.environ.get("IAAS_AUTO_TOP_UP_GIVE_UP_AFTER", "6"))
# A card top-up still unpaid this many days after it was opened is cancelled at Stripe and
# failed by finish_top_ups (a success that still arrives later is credited all the same).
IAAS_TOP_UP_EXPIRE_AFTER_DAYS = int(os.environ.get("IAAS_TOP_UP_EXPIRE_AFTER_DAYS", "7"))
# Reserve-ahead chunk per selling context, in minor units, by the context's name:
# IAAS_RESERVE_AHEAD_<NAME> in the environment (IAAS_RESERVE_AHEAD_CLOUD=1000). A context
# not named here reserves its registered default (the kit's is 0: exactly the shortfall,
# so a customer can always spend the whole balance in any mix of contexts).
IAAS_RESERVE_AHEAD = {
    name.removeprefix("IAAS_RESERVE_AHEAD_").lower(): int(value)
    for name, value in sorted(os.environ.items())
    if name.startswith("IAAS_RESERVE_AHEAD_")
}
# Settlement cadence: metered usage accrues in place and a settlement run (settle_usage)
# closes it into charges at least this often (and at each month's end, and when a
# service ends). 0: every run closes everything that accrued.
IAAS_SETTLE_USAGE_EVERY_HOURS = int(os.environ.get("IAAS_SETTLE_USAGE_EVERY_HOURS", "24"))
# Batch runs (metering, renewals, settlement): services per batch, and the batch
# transaction's own lock_timeout (short: a batch never waits long on anyone; it skips
# what is locked and leaves it to the run's last pass).
IAAS_BATCH_SIZE = int(os.environ.get("IAAS_BATCH_SIZE", "2000"))
IAAS_BATCH_LOCK_TIMEOUT_MS = int(os.environ.get("IAAS_BATCH_LOCK_TIMEOUT_MS", "500"))
# A purchase's writes folded into few statements on PostgreSQL (iaas.contracts.statements:
# six with a reservation, three inside the allowance). False runs them one per statement,
# as on SQLite: for tests that hold the two ways to the same results, and for diagnosis.
IAAS_FOLD_STATEMENTS = env_bool("IAAS_FOLD_STATEMENTS", True)
# Deliver outbox rows right after commit, in the same process (a latency shortcut; the
# deliver_events command is what guarantees delivery).
IAAS_DELIVER_ON_COMMIT = env_bool("IAAS_DELIVER_ON_COMMIT", True)
# Delivery retries: after this many failed attempts a row is marked failed and waits
# for an operator (the admin's retry action) or `deliver_events --retry-failed`.
IAAS_OUTBOX_MAX_ATTEMPTS = int(os.environ.get("IAAS_OUTBOX_MAX_ATTEMPTS", "10"))
# Transactions that hit a deadlock or lock timeout are retried this many times in all.
IAAS_TRANSACTION_ATTEMPTS = int(os.environ.get("IAAS_TRANSACTION_ATTEMPTS", "4"))


# --- Outbox retention ------------------------------------------------------------------
# Delivered outbox rows are kept this many days (what was delivered when, for a person
# looking into a delivery), then deleted by `purge_outbox` (daily, from cron). Pending and
# failed rows are never purged. Reconciliation and invoicing judge from Billing's
# applied-once records, never from delivered rows, so any retention is safe for them.
def outbox_retention_days() -> int:
    days = int(os.environ.get("IAAS_OUTBOX_RETENTION_DAYS", "14"))
    if days < 1:
        raise ValueError(f"IAAS_OUTBOX_RETENTION_DAYS must be at least 1 day, not {days}")
    return days


IAAS_OUTBOX_RETENTION_DAYS = outbox_retention_days()
# Rows deleted per statement (and per transaction): short locks, bounded WAL bursts.
IAAS_OUTBOX_PURGE_BATCH = int(os.environ.get("IAAS_OUTBOX_PURGE_BATCH", "5000"))

# --- Operations (the management commands) ----------------------------------------------
# A server suspended for want of money (and for nothing else) this long is terminated
# by bill_usage; a hosting subscription, cancelled by renew_subscriptions.
IAAS_SERVER_GRACE_HOURS = int(os.environ.get("IAAS_SERVER_GRACE_HOURS", "168"))
IAAS_HOSTING_GRACE_DAYS = int(os.environ.get("IAAS_HOSTING_GRACE_DAYS", "7"))
# Any other metered context's grace period in hours, from IAAS_GRACE_HOURS_<NAME> in the
# environment (IAAS_GRACE_HOURS_STORAGE=72); a context not named here uses its default.
IAAS_GRACE_HOURS = {
    name.removeprefix("IAAS_GRACE_HOURS_").lower(): int(value)
    for name, value in sorted(os.environ.items())
    if name.startswith("IAAS_GRACE_HOURS_")
}
# The owner of a service suspended for want of money alone is warned this many hours before
# its context's batch run ends it (ServiceEndsSoon, job warn_ends; once per suspension, at
# the first run after it when the grace is shorter).
IAAS_END_WARNING_HOURS = int(os.environ.get("IAAS_END_WARNING_HOURS", "24"))
# The scheduled release of idle allowance (job release_idle) gives back what sat unused
# this long (a duration: 30m, 24h, 7d).
IAAS_RELEASE_IDLE_AFTER = os.environ.get("IAAS_RELEASE_IDLE_AFTER", "24h")
# reconcile reports an event its handler has not applied after this many seconds (or
# that failed) as a violation: a charge or release Billing has not booked.
IAAS_RECONCILE_STUCK_AFTER_SECONDS = int(os.environ.get("IAAS_RECONCILE_STUCK_AFTER_SECONDS", "300"))
# reconcile runs Billing's checks and the cross-context ones on two connections sharing
# one snapshot (PostgreSQL). Off: one connection, one after the other.
IAAS_RECONCILE_PARALLEL = env_bool("IAAS_RECONCILE_PARALLEL", True)


# --- Requests to customers' addresses (iaas.common.outgoing) -----------------------------
# Webhooks and provider calls go only to globally routable addresses (ARCHITECTURE.md,
# "Pitfalls we know of"). True lets loopback and private addresses through (the cloud's
# metadata service stays refused): for development and the test suite, whose receivers
# listen on 127.0.0.1. The production settings refuse to start with it on.
IAAS_OUTGOING_ALLOW_PRIVATE = env_bool("IAAS_OUTGOING_ALLOW_PRIVATE", False)
# Only https:// URLs are accepted (and sent to). Development and the tests allow http://.
IAAS_OUTGOING_REQUIRE_HTTPS = env_bool("IAAS_OUTGOING_REQUIRE_HTTPS", True)
# Seconds to establish the connection (TCP), and for the whole exchange: resolving,
# connecting, TLS, sending and reading the response. A slow receiver costs a worker no more.
IAAS_OUTGOING_CONNECT_TIMEOUT = float(os.environ.get("IAAS_OUTGOING_CONNECT_TIMEOUT", "3"))
IAAS_OUTGOING_TIMEOUT = float(os.environ.get("IAAS_OUTGOING_TIMEOUT", "10"))
# At most this much of a response body is read (and kept, say in a delivery attempt); the
# rest is never read.
IAAS_OUTGOING_MAX_RESPONSE_BYTES = int(os.environ.get("IAAS_OUTGOING_MAX_RESPONSE_BYTES", "16384"))
# The certificate authorities receivers' certificates are checked against: a PEM file, or
# unset for certifi's bundle (Mozilla's list, pinned with the other requirements).
IAAS_OUTGOING_CA_BUNDLE = os.environ.get("IAAS_OUTGOING_CA_BUNDLE") or None


# --- Operator accounts (the admin) -------------------------------------------------------
# Failed admin logins are counted per account and per address (django-axes); either
# reaching the limit locks further attempts, a correct password included, until the
# cool-off passes or an operator deletes the access attempt in the admin. Only the admin
# is counted: API credentials have their own limits.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out login
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("IAAS_ADMIN_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("IAAS_ADMIN_LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_ONLY_ADMIN_SITE = True
AXES_WHITELIST_CALLABLE = "iaas.operations.login_limits.outside_the_admin"
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "iaas.operations.login_limits.client_address"
AXES_LOCKOUT_CALLABLE = "iaas.operations.login_limits.lockout_response"
# The second factor (django-otp): an authenticator app (TOTP) plus one-time recovery
# codes, required of superusers and Finance (iaas.operations.second_factor).
OTP_TOTP_ISSUER = os.environ.get("IAAS_OTP_ISSUER", "IaaS billing")
IAAS_OTP_RECOVERY_CODES = 10
# An operator session ends after this much inactivity (every request renews it).
SESSION_COOKIE_AGE = int(os.environ.get("IAAS_SESSION_IDLE_MINUTES", "30")) * 60
SESSION_SAVE_EVERY_REQUEST = True
# seed_demo's known passwords and printed second factors are for development only.
IAAS_DEMO_DATA_ALLOWED = True

# --- REST framework and the schema ----------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["iaas.api.authentication.ApiKeyAuthentication"],
    # A `read` API key may only read (iaas.api.authentication.KeyScope).
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "iaas.api.authentication.KeyScope",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Strict JSON within DATA_UPLOAD_MAX_MEMORY_SIZE (REST framework's parser checks no size).
    "DEFAULT_PARSER_CLASSES": ["iaas.api.parsers.StrictJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "iaas.api.schema.ApiAutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "iaas.api.pagination.PagePagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "iaas.api.problems.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    # Proxies in front of the app that append to X-Forwarded-For. 0: throttle by the
    # socket's address, so a client cannot pick its own address with that header.
    "NUM_PROXIES": int(os.environ.get("IAAS_NUM_PROXIES", "0")),
    # Every endpoint: per customer when authenticated ("user"), per client address
    # otherwise ("anon"); registration and token issue have their own scopes on top.
    # Counted in the shared cache below (iaas/api/throttles.py). An empty variable turns
    # that limit off.
    "DEFAULT_THROTTLE_CLASSES": [
        "iaas.api.throttles.CustomerThrottle",
        "iaas.api.throttles.AddressThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": os.environ.get("IAAS_THROTTLE_USER", "1200/minute") or None,
        "anon": os.environ.get("IAAS_THROTTLE_ANON", "120/minute") or None,
        "register": os.environ.get("IAAS_THROTTLE_REGISTER", "30/minute") or None,
        "token": os.environ.get("IAAS_THROTTLE_TOKEN", "30/minute") or None,
    },
}

# --- Cache: where the throttles count, shared by every process ------------------------
# Redis when REDIS_URL is set (what production runs: one INCR per request, atomic across
# every worker and host). Without it, the database cache in the table the api app's
# migration creates, so the embedded SQLite default needs nothing more.
REDIS_URL = os.environ.get("REDIS_URL", "")
IAAS_CACHE_KEY_PREFIX = os.environ.get("IAAS_CACHE_KEY_PREFIX", "iaas")
IAAS_CACHE_TABLE = "iaas_cache"
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": IAAS_CACHE_KEY_PREFIX,
            # A Redis that hangs costs a request at most this long (the throttle then
            # lets the request through: see iaas/api/throttles.py).
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": IAAS_CACHE_TABLE,
            "KEY_PREFIX": IAAS_CACHE_KEY_PREFIX,
        }
    }

# --- Background work: Celery on RabbitMQ ------------------------------------------------
# With CELERY_BROKER_URL (amqp://user:password@host:5672/vhost), Celery beat schedules the
# periodic runs (iaas.operations.schedule) and workers on any number of hosts run them,
# fanned out per wallet partition. Without it nothing needs a broker: the same runs are
# the management commands, from cron, and `deliver_events --loop` delivers the outbox.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
IAAS_TASK_QUEUE_PREFIX = os.environ.get("IAAS_TASK_QUEUE_PREFIX", "iaas")
# The fixed set of queues a partitioned run is routed to (each wallet partition to one of
# them, by the wallet id's leading bits), and the partitions a run is cut into (a multiple
# of the queues). A worker reserves up to its concurrency in messages from each queue it
# consumes (quorum queues have no global prefetch), so a run shares among worker hosts
# only when it has more parts than one host reserves: at least queues x concurrency x
# hosts (8 x 2 x 4 here). bench/cluster.py's scale rows show one host taking all of a run
# of 8 parts on 8 queues.
IAAS_TASK_PARTITION_QUEUES = int(os.environ.get("IAAS_TASK_PARTITION_QUEUES", "8"))
IAAS_TASK_PARTITIONS = int(os.environ.get("IAAS_TASK_PARTITIONS", "64"))
# A message redelivered this many times (a worker died holding it, or it was put back
# each time) is dead-lettered on its next return, for an operator (the admin's "Dead
# letters"): a message is delivered at most this many times plus one.
IAAS_TASK_DELIVERY_LIMIT = int(os.environ.get("IAAS_TASK_DELIVERY_LIMIT", "10"))
# A task that raises is tried again this many times, after 1, 2, 4, ... times this delay
# (capped at ten minutes), then dead-lettered.
IAAS_TASK_MAX_RETRIES = int(os.environ.get("IAAS_TASK_MAX_RETRIES", "5"))
IAAS_TASK_RETRY_DELAY_SECONDS = int(os.environ.get("IAAS_TASK_RETRY_DELAY_SECONDS", "2"))
# Subscriptions outside the money transaction (relay=True: notifications, consumers on
# other hosts) are relayed to the broker and applied by task workers; off (no broker),
# the delivery worker applies them in-process, under the same inbox records.
IAAS_RELAY_EVENTS = env_bool("IAAS_RELAY_EVENTS", bool(CELERY_BROKER_URL))
# Runs of the scheduled jobs (the admin's "Job runs") are kept this many days; those of
# the jobs that repeat every few seconds (delivery, relay), one day.
IAAS_JOB_HISTORY_DAYS = int(os.environ.get("IAAS_JOB_HISTORY_DAYS", "30"))
if IAAS_TASK_PARTITIONS % IAAS_TASK_PARTITION_QUEUES:
    raise ValueError("IAAS_TASK_PARTITIONS must be a multiple of IAAS_TASK_PARTITION_QUEUES")
# Fit for money work: a task is acknowledged after it ran (late), a task whose worker died
# is redelivered, a failed one is not acknowledged (so it can reach the dead-letter
# queue), one message at a time per worker process, JSON only, bounded in time.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_ACKS_ON_FAILURE_OR_TIMEOUT = False
CELERY_TASK_ACKS_ON_FAILURE = False  # the two halves of the above, as Celery 5.7 names them
CELERY_TASK_ACKS_ON_TIMEOUT = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True  # outcomes are in the database (JobRun), not a result store
CELERY_RESULT_BACKEND = None
# Below RabbitMQ's consumer_timeout (README: set it to two hours), which closes the channel
# of a delivery unacknowledged that long, reserved messages waiting behind a running task
# included.
CELERY_TASK_SOFT_TIME_LIMIT = int(os.environ.get("IAAS_TASK_SOFT_TIME_LIMIT", "900"))
CELERY_TASK_TIME_LIMIT = int(os.environ.get("IAAS_TASK_TIME_LIMIT", "1200"))
CELERY_TASK_DEFAULT_QUEUE_TYPE = "quorum"
CELERY_WORKER_DETECT_QUORUM_QUEUES = True
CELERY_TASK_CREATE_MISSING_QUEUES = False  # a typo in a queue name is an error, not a new queue
# Every publish waits for the broker's confirm: a task the broker did not take is an error
# at the publisher, never a silent loss.
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = 5
CELERY_BROKER_HEARTBEAT = 10
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5}
# A worker that loses the broker stops what it runs: the broker redelivers the message
# (acks late) and every job is safe to run again.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # the project's LOGGING (JSON in production)
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_MAX_LOOP_INTERVAL = 5

SPECTACULAR_SETTINGS = {
    "TITLE": "IaaS billing core API",
    "DESCRIPTION": (
        "Prepaid wallets, cloud servers and web hosting. Money is integer minor units "
        "plus an ISO 4217 currency."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # The schema lists the offered plan ids, read from the catalog, so generating it
    # needs the database; the suite generates and validates it (and schemathesis runs
    # against it), so `check --deploy` need not, and works without a database.
    "ENABLE_DJANGO_DEPLOY_CHECK": False,
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "WalletStatusEnum": "iaas.billing.models.Wallet.Status",
        "ServerStatusEnum": "iaas.cloud.models.Server.Status",
        "SubscriptionStatusEnum": "iaas.hosting.models.Subscription.Status",
        "TopUpStatusEnum": "iaas.billing.models.TopUp.Status",
        "PaymentMethodStatusEnum": "iaas.billing.models.PaymentMethod.Status",
        "LedgerEntryKindEnum": "iaas.billing.models.LedgerEntry.Kind",
    },
}

# Stored Idempotency-Key responses are replayed for this many seconds (then purged by
# `purge_idempotency_keys`).
IAAS_IDEMPOTENCY_KEY_TTL = int(os.environ.get("IAAS_IDEMPOTENCY_KEY_TTL", str(24 * 3600)))

# --- Operator console: one-time tokens ---------------------------------------------------
# The admin records the one-time token of each operator action it carried out, so a
# resubmitted page does nothing more; rows older than this many days are deleted by
# `purge_operation_tokens` (a browser does not resubmit a page that old).
IAAS_OPERATION_TOKEN_RETENTION_DAYS = int(os.environ.get("IAAS_OPERATION_TOKEN_RETENTION_DAYS", "30"))

# --- What operators watch ---------------------------------------------------------------
# /metrics (Prometheus) answers only a request with `Authorization: Bearer <token>`; with
# no token set it is a 404, so nothing is shown by default. With several gunicorn workers
# set PROMETHEUS_MULTIPROC_DIR in their environment (prometheus_client reads it, not
# Django): each worker writes its counters there and a scrape adds them up.
IAAS_METRICS_TOKEN = os.environ.get("IAAS_METRICS_TOKEN", "")

# Plain text here (development, tests), JSON lines in production (production.py); every
# line carries the request's (or task's) id. Celery's workers log the same way.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "iaas.common.logs.RequestIdFilter", "missing": "-"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}

# --- Customers' webhooks and emails (iaas.notifications) ------------------------------------
# Secrets the app must use again (webhook signing secrets) are stored encrypted with these
# Fernet keys (comma-separated, the first encrypts, every one decrypts: add a new key in
# front, re-encrypt with `rotate_secret_keys`, then drop the old one). Production requires
# them; elsewhere a key derived from SECRET_KEY stands in.
IAAS_SECRET_KEYS = env_list("IAAS_SECRET_KEYS", [])
# Links in emails (address verification) start with this.
IAAS_PUBLIC_URL = os.environ.get("IAAS_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
# A webhook delivery is retried with exponential backoff and jitter for this long (hours);
# an endpoint failing for IAAS_WEBHOOK_DISABLE_AFTER_HOURS is disabled and its owner told.
IAAS_WEBHOOK_RETRY_FOR_HOURS = int(os.environ.get("IAAS_WEBHOOK_RETRY_FOR_HOURS", str(3 * 24)))
# The first retry waits about this long; each next one four times longer, at most 12 hours.
IAAS_WEBHOOK_FIRST_RETRY_SECONDS = float(os.environ.get("IAAS_WEBHOOK_FIRST_RETRY_SECONDS", "30"))
IAAS_WEBHOOK_DISABLE_AFTER_HOURS = int(os.environ.get("IAAS_WEBHOOK_DISABLE_AFTER_HOURS", str(5 * 24)))
# After a rotation the previous secret also signs for this long.
IAAS_WEBHOOK_PREVIOUS_SECRET_HOURS = int(os.environ.get("IAAS_WEBHOOK_PREVIOUS_SECRET_HOURS", "24"))
IAAS_WEBHOOK_ENDPOINTS_PER_CUSTOMER = int(os.environ.get("IAAS_WEBHOOK_ENDPOINTS_PER_CUSTOMER", "16"))
# Attempts (and finished deliveries) older than this are purged (purge_notifications).
IAAS_NOTIFICATION_RETENTION_DAYS = int(os.environ.get("IAAS_NOTIFICATION_RETENTION_DAYS", "30"))
# A sending round claims this many deliveries (and as many emails) and sends them at
# once, one thread each, each claim a lease long enough for its request to time out.
IAAS_NOTIFY_THREADS = int(os.environ.get("IAAS_NOTIFY_THREADS", "8"))
IAAS_EMAIL_MAX_ATTEMPTS = int(os.environ.get("IAAS_EMAIL_MAX_ATTEMPTS", "8"))
# Email: SMTP from the environment in production (EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER,
# EMAIL_HOST_PASSWORD, EMAIL_USE_TLS), the console in development, locmem in tests.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = int(os.environ.get("EMAIL_TIMEOUT", "10"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "IaaS billing <billing@localhost>")
# The operators mailed when a payment needs a person (a parked payment, a reversal that
# froze a wallet): "Name <address>", comma-separated. The error is logged in any case.
ADMINS = [parseaddr(address) for address in env_list("ADMINS", [])]
SERVER_EMAIL = os.environ.get("SERVER_EMAIL", DEFAULT_FROM_EMAIL)
