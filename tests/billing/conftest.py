"""Fixtures of Billing's service tests."""

from __future__ import annotations

import pytest

from tests.billing.payment_doubles import Script, script_provider


@pytest.fixture
def scripted(db, settings) -> Script:
    """The configured payment provider answers what the test scripts (ScriptedProvider)."""
    return script_provider(settings)
