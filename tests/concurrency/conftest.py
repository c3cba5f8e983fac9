"""The concurrency tests run on PostgreSQL only (their threads come from tests.threads)."""

from __future__ import annotations

import pytest
from django.db import connection


@pytest.fixture(autouse=True)
def _postgres_only():
    assert connection.vendor == "postgresql", "concurrency tests need PostgreSQL's row locks"
