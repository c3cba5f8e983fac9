"""The benchmarks' own plumbing that a fresh machine depends on: the template database
they copy is created when missing (``python -m bench.throughput`` failed with
``database "iaas_bench" does not exist`` before)."""

from __future__ import annotations

import itertools
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


def test_the_metering_baseline_prices_hours_as_the_kit_does():
    """The raw baseline computes each server's hours and capped amount in Python; they must
    be the kit's (iaas.spending.usage.price_hours), across a month's end and the cap."""
    import datetime as dt

    from bench import metering
    from iaas.spending import usage

    utc = dt.UTC
    cases = [
        # start, hours, price, cap, spent this month, refunded this month
        (dt.datetime(2026, 11, 29, 20, 25, tzinfo=utc), 1, 4, 2000, 1000, 0),
        (dt.datetime(2026, 11, 29, 20, 25, tzinfo=utc), 1, 4, 2000, 1998, 0),  # the cap cuts the hour
        (dt.datetime(2026, 11, 29, 20, 25, tzinfo=utc), 3, 4, 2000, 2000, 8),  # refunds make room
        (dt.datetime(2026, 11, 30, 22, 30, tzinfo=utc), 4, 40, 20000, 19990, 0),  # into December
        (dt.datetime(2026, 12, 31, 23, 59, tzinfo=utc), 2, 1, 500, 0, 0),  # into the next year
    ]
    for start, hours, price, cap, spent, refunded in cases:
        first = usage.month_of(start)
        expected = [
            (a.month, a.start, a.end, a.hours, a.list_amount, a.amount)
            for a in usage.price_hours(
                service_id=uuid.uuid4(),
                start=start,
                hours=hours,
                per_hour=price,
                cap=cap,
                spent={first: usage.MonthSpent(spent, refunded, list_exact=spent)},
            )
        ]
        assert list(metering.price_hours(start, hours, price, cap, spent, refunded)) == expected


def test_the_metering_partitions_cover_every_wallet_once():
    from bench import metering

    for parts in (1, 2, 3, 8):
        bounds = [metering.partition(p, parts) for p in range(parts)]
        assert bounds[0][0] == uuid.UUID(int=0)
        assert bounds[-1][1] is None
        for (_, hi), (lo, _) in itertools.pairwise(bounds):
            assert hi == lo


def test_the_metering_bench_runs_and_checks_what_it_claims(throwaway_name, monkeypatch, tmp_path):
    """A tiny run of ``python -m bench.metering --only raw``: from a seed whose books agree
    (reconcile clean, or failing only for I4's accrued term where reconcile lacks it), the
    baseline charges every due server once or suspends it, inserts no row doing so,
    keeps I11, settles every wallet with one ledger entry, and ends reconciled."""
    import json

    from bench import metering

    database = f"bench_metering_test_{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(common, "TEMPLATE_DB", throwaway_name)
    monkeypatch.setattr(metering, "DATABASE", database)
    monkeypatch.setattr(metering, "RESULTS", tmp_path)
    try:
        code = metering.main(
            [
                *("--servers", "300", "--wallets", "60", "--only", "raw", "--workers", "1,2"),
                *("--batch-size", "50", "--purchase-rate", "5", "--probe-idle", "0.5"),
                *("--chart", str(tmp_path / "m.png")),
            ]
        )
    finally:
        with common.connect("postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    assert code == 0
    result = json.loads(next(tmp_path.glob("metering-*.json")).read_text())
    assert [(run["kind"], run["workers"]) for run in result["runs"]] == [("raw", 1), ("raw", 2)]
    for run in result["runs"]:
        seed = run["seed_reconcile"]
        assert seed["ok"] or seed["only_accrued_term_missing"], seed
        hourly, settle = run["hourly"], run["settle"]
        # 3 wallets in 60 cannot pay: their 15 servers are suspended, the rest charged.
        assert (hourly["servers_charged"], hourly["servers_suspended"], hourly["left_due"]) == (285, 15, 0)
        assert hourly["rows_inserted_by_run"] == {}
        assert hourly["statements_per_batch"] == 5
        assert hourly["i11"]["servers"] >= 300
        assert run["books"]["i11_ok"]
        assert hourly["purchases"]["purchases"] > 0
        assert not hourly["purchases"]["errors"]
        assert (settle["services"], settle["charges"], settle["ledger_entries"]) == (300, 300, 60)
        # The floor's 9, and the design's other writes: each wallet's ChargesRecorded row,
        # the applied-once records, the ChargeSettled rows, the charges' entry, delivered.
        assert settle["statements_per_batch"] == 14
        assert settle["rows_inserted_by_run"]["billing_settledcharge"] == 300
        assert settle["rows_inserted_by_run"]["contracts_outboxmessage"] == 2 * 60
        assert run["books"]["ok"]
        assert run["reconcile"]["ok"]
    assert (tmp_path / "m.png").stat().st_size > 0


def test_the_seeds_and_the_raw_protocol_fit_the_schema_and_keep_the_books(throwaway_name, monkeypatch):
    """The benchmarks write the real tables in SQL (the service seed, the long-history
    load, the raw protocol purchase). A column the models gained without a database
    default broke the seed and the load unnoticed (``blocked``, ``operator_reason``,
    ``refunded_amount``). A tiny run of each on a copy of the migrated schema, then the
    real reconcile: every invariant holds, so the raw protocol is the same work as the
    service's purchase, done right."""
    from bench import history, raw, service

    monkeypatch.setattr(common, "TEMPLATE_DB", throwaway_name)
    common.migrate_template()
    database = f"bench_seed_test_{uuid.uuid4().hex[:8]}"
    common.recreate_database(database, template=throwaway_name)
    try:
        wallets = service.seed(database, tag="t", wallets=4, amount=10_000)
        history.load(database, wallet_ids=[wallet for _, wallet in wallets], per_wallet=3)
        monkeypatch.setattr(raw, "PROTOCOL_DATABASE", database)
        purchase = raw.protocol_op(0, {"wallets": wallets})
        for n in range(6):
            purchase(n)
        purchase.close()
        checked = common.in_django(database, "bench.service:drain_and_reconcile")
    finally:
        with common.connect("postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    assert checked["drained"] > 0
    assert checked["reconcile_ok"], checked["violations"]
