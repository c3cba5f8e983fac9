#!/usr/bin/env python
"""Check the Stripe double of the tests (tests/payments/stripe_double.py) against Stripe's own
published description of its API, the OpenAPI file the stripe libraries are generated from:

    .venv/bin/python scripts/check_stripe_double.py /tmp/spec3.json

The file is openapi/spec3.json of github.com/stripe/openapi; it stays outside the repository.
The test suite checks the double against the stripe library's generated classes; this checks
it against the spec itself, which also says which fields are required and which may be null.

It starts a double, walks a small scenario through the real stripe client, and validates every
answer and every event, and every event's object, against components.schemas.<kind> (answers
that are errors against `error`): required fields present, types right, enum values allowed,
following $ref, anyOf and nullable. A field the spec does not declare is a mismatch too, unless
the spec is older than the API version the double speaks, when the field may simply be newer
than the spec: it is then listed apart. Prints what it checked; exits 1 on any mismatch."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections import Counter
from pathlib import Path

import stripe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.payments.stripe_double import StripeDouble  # noqa: E402

KINDS = (
    "payment_intent",
    "setup_intent",
    "customer",
    "payment_method",
    "charge",
    "refund",
    "dispute",
    "event",
)
PAYMENT = {
    "amount": 2500,
    "currency": "eur",
    "metadata": {"top_up_id": "42"},
    "payment_method_types": ["card"],
}
OFF_SESSION = PAYMENT | {"off_session": True, "confirm": True}


class SpecValidator:
    """A small validator for the part of OpenAPI 3 Stripe's spec uses for its objects."""

    def __init__(self, spec: dict):
        self.schemas = spec["components"]["schemas"]

    def problems(self, value, schema: dict, path: str) -> list[tuple[str, str]]:
        """(kind, message) pairs, kind "mismatch" or "undeclared"; none when `value` conforms."""
        schema = self._resolved(schema)
        if value is None:
            return [] if schema.get("nullable") else [("mismatch", f"{path}: null, and not nullable")]
        if "anyOf" in schema or "oneOf" in schema:
            return self._best_alternative(value, schema.get("anyOf") or schema["oneOf"], path)
        if "enum" in schema and value not in schema["enum"]:
            return [("mismatch", f"{path}: {value!r} is not among {schema['enum']}")]
        kind = schema.get("type")
        if kind == "object":
            return self._object_problems(value, schema, path)
        if kind == "array":
            if not isinstance(value, list):
                return [("mismatch", f"{path}: {value!r} is no array")]
            return [
                p
                for i, item in enumerate(value)
                for p in self.problems(item, schema["items"], f"{path}[{i}]")
            ]
        expected = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,)}.get(kind)
        if expected and (not isinstance(value, expected) or (kind != "boolean" and isinstance(value, bool))):
            return [("mismatch", f"{path}: {value!r} is no {kind}")]
        return []

    def _resolved(self, schema: dict) -> dict:
        while "$ref" in schema:
            schema = self.schemas[schema["$ref"].rsplit("/", 1)[-1]] | {
                k: v for k, v in schema.items() if k != "$ref"
            }
        return schema

    def _best_alternative(self, value, alternatives: list[dict], path: str) -> list[tuple[str, str]]:
        found = [self.problems(value, alternative, path) for alternative in alternatives]
        return min(found, key=lambda p: (sum(kind == "mismatch" for kind, _ in p), len(p)))

    def _object_problems(self, value, schema: dict, path: str) -> list[tuple[str, str]]:
        if not isinstance(value, dict):
            return [("mismatch", f"{path}: {value!r} is no object")]
        found = [
            ("mismatch", f"{path}.{name}: required, missing")
            for name in schema.get("required", ())
            if name not in value
        ]
        declared, others = schema.get("properties", {}), schema.get("additionalProperties")
        for name, item in value.items():
            if name in declared:
                found += self.problems(item, declared[name], f"{path}.{name}")
            elif isinstance(others, dict):
                found += self.problems(item, others, f"{path}.{name}")
            elif declared:  # a described object, and this field is not in its description
                found.append(("undeclared", f"{path}.{name}"))
        return found


def walk_scenario(double: StripeDouble) -> None:
    """One of each thing the double answers: objects, lists, errors, and their events."""
    client = stripe.StripeClient("sk_test_check", base_addresses={"api": double.url}, max_network_retries=0)
    customer = client.v1.customers.create(params={"email": "ada@example.com", "metadata": {"owner_id": "1"}})
    client.v1.customers.retrieve(customer.id)
    setup = client.v1.setup_intents.create(params={"customer": customer.id, "payment_method_types": ["card"]})
    card = double.confirm_setup(setup.id)["payment_method"]
    client.v1.setup_intents.retrieve(setup.id)
    paid = client.v1.payment_intents.create(
        params=OFF_SESSION | {"customer": customer.id, "payment_method": card}
    )
    client.v1.payment_intents.retrieve(paid.id, params={"expand": ["latest_charge"]})
    client.v1.refunds.create(params={"payment_intent": paid.id, "amount": 1000})
    double.dispute(paid.id)
    browser = client.v1.payment_intents.create(params=PAYMENT)
    double.pay(browser.id, "pm_card_authenticationRequired")
    double.authenticate(browser.id, succeed=False)
    client.v1.payment_intents.cancel(browser.id)
    for refused in ("pm_card_chargeCustomerFail", "pm_card_authenticationRequired"):
        with contextlib.suppress(stripe.CardError):
            client.v1.payment_intents.create(params=OFF_SESSION | {"payment_method": refused})
    declined = client.v1.setup_intents.create(
        params={"customer": customer.id, "payment_method_types": ["card"]}
    )
    try:
        client.v1.setup_intents.confirm(declined.id, params={"payment_method": "pm_card_chargeDeclined"})
    except stripe.CardError:
        client.v1.setup_intents.cancel(declined.id)
    attached = client.v1.payment_methods.attach("pm_card_mastercard", params={"customer": customer.id})
    client.v1.customers.payment_methods.list(customer.id)
    client.v1.payment_methods.detach(attached.id)
    with contextlib.suppress(stripe.InvalidRequestError):
        client.v1.payment_intents.retrieve("pi_missing")


def samples(double: StripeDouble) -> list[tuple[str, object]]:
    """(schema name, value) for every answer, event and event object."""
    found = []
    for _, _, _, body in double.responses:
        if "error" in body:
            found.append(("error", body))
        elif body.get("object") == "list":
            found += [(item["object"], item) for item in body["data"]]
        else:
            found.append((body["object"], body))
    for event in double.events:
        found += [("event", event), (event["data"]["object"]["object"], event["data"]["object"])]
    return found


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def problems_of(spec: dict, checked: list[tuple[str, object]]) -> tuple[list[str], Counter]:
    """(mismatches, undeclared fields with how often each was met)."""
    validator, mismatches, undeclared = SpecValidator(spec), [], Counter()
    for kind, value in checked:
        for problem, message in validator.problems(value, {"$ref": f"#/components/schemas/{kind}"}, kind):
            if problem == "mismatch":
                mismatches.append(message)
            else:
                undeclared[re.sub(r"\[\d+\]", "[]", message)] += 1
    return sorted(set(mismatches)), undeclared


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    spec_version, api_version = spec["info"]["version"], stripe.api_version
    with StripeDouble() as double:
        walk_scenario(double)
        checked = samples(double)
    mismatches, undeclared = problems_of(spec, checked)
    counts = Counter(kind for kind, _ in checked)
    missing_kinds = [kind for kind in (*KINDS, "error") if not counts[kind]]

    say(f"spec {spec_path}: API version {spec_version}; the double speaks {api_version}")
    for kind in (*KINDS, "error"):
        say(f"  {kind:<15} {counts[kind]:>3} checked against components.schemas.{kind}")
    if spec_version.split(".")[0] >= api_version.split(".")[0]:  # ISO dates compare as text
        mismatches += [f"{path}: not declared by the spec" for path in sorted(undeclared)]
    elif undeclared:
        say(f"\n{len(undeclared)} fields this spec does not declare, perhaps newer than it (the test suite")
        say(f"checks them against the classes of stripe {stripe.VERSION}, generated for {api_version}):")
        say("\n".join(f"  {path} (x{n})" for path, n in sorted(undeclared.items())))
    say(f"\n{len(mismatches)} mismatches" + "".join(f"\n  {m}" for m in mismatches))
    if missing_kinds:
        say(f"the scenario produced no {', '.join(missing_kinds)}: nothing checked them")
    return 1 if mismatches or missing_kinds else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
