"""The benchmarks' own plumbing that a fresh machine depends on: the template database
they copy is created when missing (``python -m bench.throughput`` failed with
``database "iaas_bench" does not exist`` before)."""

from __future__ import annotations

import uuid

import pytest

from bench import common


def exists(name: str) -> bool:
    with common.connect("postgres", autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


@pytest.fixture
def throwaway_name():
    name = f"iaas_bench_test_{uuid.uuid4().hex[:12]}"
    yield name
    with common.connect("postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_a_missing_database_is_created_and_an_existing_one_left_alone(throwaway_name):
    assert not exists(throwaway_name)
    assert common.ensure_database(throwaway_name) is True
    assert exists(throwaway_name)
    with common.connect(throwaway_name, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (id int)")
    assert common.ensure_database(throwaway_name) is False
    with common.connect(throwaway_name) as conn:
        assert conn.execute("SELECT to_regclass('kept')").fetchone() == ("kept",)


def test_protected_databases_are_never_created():
    with pytest.raises(SystemExit):
        common.ensure_database("postgres")


def test_the_template_is_created_and_migrated_on_a_fresh_machine(throwaway_name, monkeypatch):
    monkeypatch.setattr(common, "TEMPLATE_DB", throwaway_name)
    common.migrate_template()
    with common.connect(throwaway_name) as conn:
        (table,) = conn.execute("SELECT to_regclass('billing_ledgerentry')").fetchone()
    assert table == "billing_ledgerentry"
