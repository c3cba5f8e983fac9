"""Property-based tests of the whole API against its own OpenAPI schema (schemathesis,
its CLI against the live test server): no 5xx, every response conforms to the schema
(status, content type, headers, body), schema-violating input is rejected and valid
input is accepted, unsupported methods are 405, a missing token is 401. All checks on.

The customer is authenticated, with a funded wallet, a server and a subscription whose
ids schemathesis may draw for path parameters and the body's ``wallet``, so requests
reach real objects and not only 404s. Examples per operation are bounded (CI time).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from iaas.api import keys as api_keys
from iaas.cloud import services as cloud_services
from iaas.hosting import services as hosting_services
from tests.factories import api_key_for, funded_wallet

MAX_EXAMPLES = int(os.environ.get("IAAS_SCHEMATHESIS_MAX_EXAMPLES", "15"))
SEED = os.environ.get("IAAS_SCHEMATHESIS_SEED", "20261126")
HOOKS = Path(__file__).resolve().parent / "schemathesis_hooks.py"


@pytest.fixture
def fuzzed_customer(transactional_db, catalog, customer, settings):
    # One customer and one address send every fuzzed request (registration and token
    # issue included): lift the rate limits for the run.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {scope: "100000/minute" for scope in ("user", "anon", "register", "token")},
    }
    wallet = funded_wallet(customer, amount=10_000_000)
    server = cloud_services.server_create(
        owner_id=customer.id, wallet_id=wallet.id, name="fuzz", plan_id="s-1vcpu-1gb"
    )
    subscription = hosting_services.subscription_create(
        owner_id=customer.id, wallet_id=wallet.id, domain="fuzz.example.com", plan_id="web-starter"
    )
    # A key of the customer's other than the one schemathesis sends, for DELETE auth/keys/{id}/.
    spare = api_keys.api_key_create(owner_id=customer.id, name="spare").api_key
    objects = [str(wallet.id), str(server.id), str(subscription.id), str(spare.pk)]
    return api_key_for(customer), objects


def schemathesis_config(path: Path, object_ids: list[str]) -> Path:
    values = ", ".join(f'"{value}"' for value in object_ids)
    path.write_text(
        f"""
[dictionaries.objects]
values = [{values}]

[parameters]
"path.id" = {{ dictionary = "objects", probability = 0.6 }}
"path.wallet_id" = {{ dictionary = "objects", probability = 0.6 }}
"body.wallet" = {{ dictionary = "objects", probability = 0.5 }}
"""
    )
    return path


@pytest.mark.concurrency
def test_the_api_conforms_to_its_schema(live_server, fuzzed_customer, tmp_path):
    token, object_ids = fuzzed_customer
    config = schemathesis_config(tmp_path / "schemathesis.toml", object_ids)
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(config),
        "run",
        f"{live_server.url}/api/schema/?format=json",
        "--header",
        f"Authorization: Token {token}",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        SEED,
        "--no-color",
        "--output-truncate",
        "false",
        "--suppress-health-check",
        "all",
    ]
    result = subprocess.run(
        command,
        cwd=tmp_path,  # schemathesis keeps its cache in the working directory
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    print(output[-3000:])
    assert result.returncode == 0, output
