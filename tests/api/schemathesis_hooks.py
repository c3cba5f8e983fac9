"""Schemathesis hooks for the API's property-based test (loaded by the CLI through
SCHEMATHESIS_HOOKS; plain Python, no Django).

A schema-valid Idempotency-Key is replaced by a fresh UUID before each call: generated
keys repeat ("0", "0", ...) with different bodies, and the API rightly answers those with
422 idempotency_key_reused, which the positive-data check would take for a rejection of
valid input. Replays and reuse are tested on purpose in test_idempotency.py; invalid keys
(negative cases) are left as generated.
"""

import re
import uuid

import schemathesis

VALID_KEY = re.compile(r"\A[!-~](?:[ -~]{0,253}[!-~])?\Z")


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and VALID_KEY.match(key):
        headers["Idempotency-Key"] = str(uuid.uuid4())
        # A valid key for a valid key: the case's labels (positive or negative, which
        # parameter is missing) stay as generated, so take the edit as the baseline
        # instead of having schemathesis revalidate and relabel the case.
        sync = getattr(case, "_sync_validated_hashes", None)
        if sync is not None:
            sync()
