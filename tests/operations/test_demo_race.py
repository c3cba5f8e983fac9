"""``demo_race`` races one purchase per selling context, found by name in the registry."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command


def race(*args: str) -> str:
    out = io.StringIO()
    call_command("demo_race", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
@pytest.mark.concurrency
def test_every_registered_context_races_and_exactly_one_wins_each_round(catalog):
    printed = race("--rounds", "3", "--quiet")
    summary = next(line for line in printed.splitlines() if line.startswith("3 rounds:"))
    assert "cloud won" in summary
    assert "hosting won" in summary
    assert summary.endswith("rounds without exactly one winner: 0")
    assert "invariants: all hold" in printed


@pytest.mark.django_db(transaction=True)
@pytest.mark.concurrency
def test_the_contexts_are_named_on_the_command_line(catalog):
    printed = race("--rounds", "2", "--contexts", "hosting,cloud")
    assert sum(line.startswith("round ") for line in printed.splitlines()) == 2
    assert "2 rounds: hosting won" in printed


def test_an_unknown_context_is_refused_with_the_registered_names(db):
    with pytest.raises(CommandError, match="no selling context 'compute'; registered: cloud, hosting"):
        race("--contexts", "cloud,compute")


def test_a_race_needs_two_contexts(db):
    with pytest.raises(CommandError, match="two selling contexts"):
        race("--contexts", "cloud")
