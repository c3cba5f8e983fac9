"""Schemathesis hooks for the API's property-based test (loaded by the CLI through
SCHEMATHESIS_HOOKS; plain Python, no Django).

A schema-valid Idempotency-Key is replaced by a fresh UUID before each call: generated
keys repeat ("0", "0", ...) with different bodies, and the API rightly answers those with
422 idempotency_key_reused, which the positive-data check would take for a rejection of
valid input. Replays and reuse are tested on purpose in test_idempotency.py; invalid keys
(negative cases) are left as generated.

Likewise a new API key's ``expires_at`` must be in the future, which a schema cannot say
(only its description does): a generated date-time in the past is moved a year from
now. Past ones are refused on purpose in test_keys.py.

And a webhook endpoint's ``url`` must be one events may be sent to (its scheme and the
addresses its host resolves to: iaas.common.outgoing), which a schema cannot say either:
a generated string becomes a loopback URL (allowed by the test settings). A customer's
email address is made one fixed valid address: a generated one is rarely what Django's
validator takes, and changing it again within a minute is a 429 on purpose. The refusals
are tested in tests/notifications and tests/common.

And REST framework refuses a NUL character in every string (PostgreSQL's text cannot hold
one), which the schema does not say field by field: NULs are taken out of a body's
strings (each becomes an "x", keeping lengths). The refusal is REST framework's own, tested there.
"""

import datetime as dt
import re
import uuid

import schemathesis

VALID_KEY = re.compile(r"\A[!-~](?:[ -~]{0,253}[!-~])?\Z")


def _past_date_time(value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment <= dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)


def _schema_valid_text(value, max_length: int) -> bool:
    """A string the schema accepts (a negative case, empty or too long, stays as generated)."""
    return isinstance(value, str) and 1 <= len(value) <= max_length


@schemathesis.hook
def before_call(context, case, kwargs):
    edited = False
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and VALID_KEY.match(key):
        headers["Idempotency-Key"] = str(uuid.uuid4())
        edited = True
    body = case.body
    if (
        case.method.upper() == "POST"
        and case.path.endswith("/auth/keys/")
        and isinstance(body, dict)
        and _past_date_time(body.get("expires_at"))
    ):
        body["expires_at"] = (dt.datetime.now(dt.UTC) + dt.timedelta(days=365)).isoformat()
        edited = True
    if (
        isinstance(body, dict)
        and "/api/v1/webhooks/endpoints/" in case.path
        and _schema_valid_text(body.get("url"), 2000)
    ):
        body["url"] = "http://127.0.0.1:9/hooks"
        edited = True
    if (
        isinstance(body, dict)
        and case.path.endswith("/notifications/email/")
        and _schema_valid_text(body.get("address"), 254)
    ):
        body["address"] = "fuzzed-customer@example.com"
        edited = True
    if isinstance(body, dict):
        for name, value in body.items():
            if isinstance(value, str) and "\x00" in value:
                body[name] = value.replace("\x00", "x")
                edited = True
    if edited:
        # A valid value for a valid value: the case's labels (positive or negative, which
        # parameter is missing) stay as generated, so take the edit as the baseline
        # instead of having schemathesis revalidate and relabel the case.
        sync = getattr(case, "_sync_validated_hashes", None)
        if sync is not None:
            sync()
