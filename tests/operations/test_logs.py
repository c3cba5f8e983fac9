"""Production logs one JSON object a line (what a log shipper parses), each with its
request id; development and the tests log plain text with the same id."""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import logging.config
import runpy
import sys

import pytest
from cryptography.fernet import Fernet
from django.conf import settings

from iaas.common import request_ids

GIVEN = "proxy-7f3a9c01:req"


@pytest.fixture
def production_logging(monkeypatch) -> dict:
    """LOGGING as iaas.settings.production defines it (read, not installed)."""
    from iaas.settings import base

    monkeypatch.setattr(base, "SECRET_KEY", "s" * 64)  # base was read already, with the development key
    monkeypatch.setenv("ALLOWED_HOSTS", "billing.example.com")
    monkeypatch.setenv("IAAS_SECRET_KEYS", Fernet.generate_key().decode())
    return runpy.run_module("iaas.settings.production")["LOGGING"]


def configured(logging_dict: dict, kind: str, name: str):
    """One formatter or filter, made from its entry in the dict as dictConfig makes it."""
    configurator = logging.config.DictConfigurator(copy.deepcopy(logging_dict))
    entry = configurator.config[f"{kind}s"][name]
    return getattr(configurator, f"configure_{kind}")(entry)


def record(message: str = "charged %s", args: tuple = ("wallet",), exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("iaas.billing", logging.WARNING, __file__, 42, message, args, exc_info)


def test_a_production_line_is_json_with_its_request_id(production_logging):
    formatter = configured(production_logging, "formatter", "json")
    request_id = configured(production_logging, "filter", "request_id")
    made = record()
    with request_ids.bound(GIVEN):
        request_id.filter(made)
    line = formatter.format(made)

    assert "\n" not in line
    fields = json.loads(line)
    assert fields["level"] == "WARNING"
    assert fields["logger"] == "iaas.billing"
    assert fields["message"] == "charged wallet"
    assert fields["request_id"] == GIVEN
    stamped = dt.datetime.fromisoformat(fields["timestamp"])
    assert stamped.utcoffset() == dt.timedelta(0)
    assert abs(stamped.timestamp() - made.created) < 1e-3
    assert "exc_info" not in fields


def test_a_production_line_carries_the_traceback_and_null_outside_a_request(production_logging):
    formatter = configured(production_logging, "formatter", "json")
    request_id = configured(production_logging, "filter", "request_id")
    try:
        raise RuntimeError("the database went away")
    except RuntimeError:
        made = record("delivery failed", (), exc_info=sys.exc_info())
    request_id.filter(made)
    fields = json.loads(formatter.format(made))
    assert fields["request_id"] is None
    assert fields["exc_info"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: the database went away" in fields["exc_info"]


def test_production_and_development_log_through_the_same_handler_and_filter(production_logging):
    assert production_logging["handlers"]["console"]["formatter"] == "json"
    assert production_logging["handlers"]["console"]["filters"] == ["request_id"]
    assert production_logging["root"] == settings.LOGGING["root"]


def test_development_and_the_tests_log_plain_text_with_the_request_id():
    formatter = configured(settings.LOGGING, "formatter", "plain")
    request_id = configured(settings.LOGGING, "filter", "request_id")
    made = record()
    with request_ids.bound(GIVEN):
        request_id.filter(made)
    line = formatter.format(made)
    assert line.endswith(f" WARNING iaas.billing [{GIVEN}] charged wallet")
    outside = record()
    request_id.filter(outside)
    assert "[-] charged wallet" in formatter.format(outside)
