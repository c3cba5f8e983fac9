"""What the operations commands share: their exit statuses and common options
(``--dry-run``, ``--json``, durations such as ``7d`` or ``1h30m``), a batch run item by
item in which one item's failure stops no other's, a progress bar on long runs (rich, on
stderr and only on a terminal, so cron logs and --json stay clean), JSON output and
per-currency totals (with a charging batch's tally)."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import multiprocessing
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from iaas.contracts.types import format_minor_units

T = TypeVar("T")
R = TypeVar("R")

# Exit statuses every operations command keeps to.
EXIT_OK = 0
EXIT_PROBLEMS = 1  # something is wrong: a violation, an item that failed
EXIT_REFUSED = 2  # refused to run (bad arguments, a precondition not met); nothing done
EXIT_CRASHED = 70  # a worker of a run raised (EX_SOFTWARE): the run stops

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> dt.timedelta:
    """``90s``, ``15m``, ``2h``, ``7d``, ``1w``, ``1h30m``. A bare number is hours."""
    text = text.strip().lower()
    if text.isdigit():
        return dt.timedelta(hours=int(text))
    parts = _DURATION.findall(text)
    if not parts or _DURATION.sub("", text).strip():
        raise ValueError(f"not a duration (e.g. 30m, 12h, 7d, 1h30m): {text!r}")
    total = dt.timedelta()
    for number, unit in parts:
        total += dt.timedelta(**{_UNITS[unit]: int(number)})
    return total


def duration_option(text: str) -> dt.timedelta:
    """A duration given on the command line; a malformed one refuses the run."""
    try:
        return parse_duration(text)
    except ValueError as error:
        raise CommandError(str(error), returncode=EXIT_REFUSED) from None


def add_dry_run_and_json_arguments(parser, *, dry_run_help: str) -> None:
    """``--dry-run`` (``dry_run``) and ``--json`` (``as_json``): a summary for a program."""
    parser.add_argument("--dry-run", action="store_true", help=dry_run_help)
    parser.add_argument("--json", action="store_true", dest="as_json", help="print a JSON summary")


def format_duration(value: dt.timedelta) -> str:
    seconds = int(value.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")) if n]
    return "".join(parts) or "0s"


def progress(items: Iterable[T], *, total: int, description: str) -> Iterator[T]:
    """Yield ``items`` with a progress bar on stderr when it is a terminal."""
    console = Console(stderr=True)
    if not console.is_terminal or total < 2:
        yield from items
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """An item of a batch that failed: ``label`` for people (``"server 1f0c..."``),
    ``facts`` for the JSON summary (``{"server_id": "1f0c..."}``)."""

    label: str
    facts: dict[str, str]
    error: str  # repr() of the exception

    def as_dict(self) -> dict[str, str]:
        return {**self.facts, "error": self.error}


def run_each(
    items: Sequence[T],
    work: Callable[[T], R],
    *,
    description: str,
    identify: Callable[[T], tuple[str, dict[str, str]]],
    logger: logging.Logger,
) -> tuple[list[R], list[ItemFailure]]:
    """Call ``work(item)`` for every item, with a progress bar (``description``). One
    item's failure stops no other's: it is logged with its traceback and listed, named by
    ``identify(item)`` (a label and the facts for JSON). Returns what ``work`` returned
    for the items that succeeded, in order, and the failures."""
    results: list[R] = []
    failures: list[ItemFailure] = []
    for item in progress(items, total=len(items), description=description):
        try:
            results.append(work(item))
        except Exception as error:  # one item's failure stops no other's
            label, facts = identify(item)
            logger.exception("%s: %s failed", description, label)
            failures.append(ItemFailure(label, facts, repr(error)))
    return results, failures


def write_failures(stream, failures: Iterable[ItemFailure]) -> None:
    """One line a failure, for people (the command's stderr)."""
    for failure in failures:
        stream.write(f"  FAILED {failure.label}: {failure.error}")


def dump_json(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)


def report_run(command, summary: dict, *, as_json: bool, show: Callable[[dict], None]) -> None:
    """End a charging run (bill_usage, renew_subscriptions): its summary as JSON for
    machines or ``show(summary)`` for people, and exit EXIT_PROBLEMS when an item failed."""
    if as_json:
        command.stdout.write(dump_json(summary))
    else:
        show(summary)
    if summary["failed"]:
        raise SystemExit(EXIT_PROBLEMS)


class CurrencyTotals:
    """Sums of minor units per currency, for summaries."""

    def __init__(self) -> None:
        self._totals: dict[str, int] = defaultdict(int)

    def add(self, amount: int, currency: str) -> None:
        self._totals[currency] += amount

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self._totals.items()))

    def __str__(self) -> str:
        if not self._totals:
            return "nothing"
        return ", ".join(format_minor_units(amount, currency) for currency, amount in self.as_dict().items())


class ChargeOutcome(Protocol):
    """What a charging batch says of one item (Cloud's MeteringOutcome, Hosting's
    RenewalOutcome)."""

    action: str
    amount: int
    currency: str
    wallet_id: object


class ChargeTally:
    """What a charging batch (bill_usage, renew_subscriptions) did: its items counted by
    action, the units charged (hours, months), the amounts per currency, and the wallets
    it charged (whose leftover allowance it gives back when it reserved ahead)."""

    def __init__(self, outcomes: Iterable[ChargeOutcome], *, units: Callable[[ChargeOutcome], int]) -> None:
        outcomes = list(outcomes)
        self.actions: Counter[str] = Counter(outcome.action for outcome in outcomes)
        self.units = sum(units(outcome) for outcome in outcomes)
        self.totals = CurrencyTotals()
        self.charged_wallets = set()
        for outcome in outcomes:
            if outcome.amount:
                self.totals.add(outcome.amount, outcome.currency)
                self.charged_wallets.add(outcome.wallet_id)


@contextmanager
def spinner(description: str) -> Iterator[None]:
    """A spinner on stderr while a few long statements run (only on a terminal)."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield
        return
    with console.status(description):
        yield


def add_worker_arguments(parser) -> None:
    """The options of a batch run that many processes share (ARCHITECTURE.md, batches)."""
    parser.add_argument("--workers", type=int, default=1, help="run N worker processes, one partition each")
    parser.add_argument("--partition", help="run one partition only, as i/N (what each worker runs)")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per batch (IAAS_BATCH_SIZE)")
    parser.add_argument("--at", default=None, help=argparse.SUPPRESS)  # the run's moment, for its workers


def run_worker_processes(command: str, workers: int, args: Sequence[str]) -> list[dict]:
    """Run ``workers`` processes of ``command --json --partition i/N *args`` at once and
    return their JSON summaries. They are forked from this process, Django and the app
    already loaded (a fresh interpreter cost each worker about a second of start-up),
    after this process closed its database connections: each worker opens its own. A
    worker that exits with EXIT_PROBLEMS still reports; one that crashed, or died without
    a word, stops the run."""
    connections.close_all()
    context = multiprocessing.get_context("fork")
    started = []
    for index in range(workers):
        receiving, sending = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker, args=(sending, command, [*args, "--partition", f"{index}/{workers}"])
        )
        process.start()
        sending.close()
        started.append((process, receiving))
    summaries = []
    for process, receiving in started:
        try:
            code, out = receiving.recv()
        except EOFError:
            code, out = None, ""
        process.join()
        if code not in (0, EXIT_PROBLEMS):
            raise CommandError(
                f"a {command} worker failed (exit {code if code is not None else process.exitcode})"
            )
        summaries.append(json.loads(out))
    return summaries


def _worker(sending, command: str, args: list[str]) -> None:
    """One forked worker: the command on its partition; (exit status, its JSON) back to
    the parent."""
    out = io.StringIO()
    code = 0
    try:
        call_command(command, "--json", *args, stdout=out)
    except SystemExit as exit_:  # EXIT_PROBLEMS: the summary is written all the same
        code = exit_.code or 0
    except BaseException:
        logging.getLogger(__name__).exception("a %s worker failed", command)
        code = EXIT_CRASHED
    finally:
        connections.close_all()
    sending.send((code, out.getvalue()))
    sending.close()


def run_summary(
    report, *, now: dt.datetime, items: str, units: str, actions: dict[str, str], released: int
) -> dict:
    """A charging run's JSON summary from its BatchReport (iaas.spending.batch): ``items``
    and ``units`` name what it counts ("servers", "hours_charged"), ``actions`` maps each
    output name to the report's action ("renewed" -> "charged")."""
    return {
        "now": now.isoformat(),
        items: report.items,
        "batches": report.batches,
        units: report.units,
        "amounts": dict(sorted(report.amounts.items())),
        **{name: report.actions[action] for name, action in actions.items()},
        "allowances_released": released,
        "failed": [failure.as_dict() for failure in report.failures],
    }


def merge_run_summaries(summaries: list[dict], *, now: dt.datetime) -> dict:
    """The summaries of a run's worker processes, added up."""
    merged: dict = {"now": now.isoformat(), "amounts": {}, "failed": [], "workers": len(summaries)}
    for summary in summaries:
        for key, value in summary.items():
            if isinstance(value, int) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
        for currency, amount in summary["amounts"].items():
            merged["amounts"][currency] = merged["amounts"].get(currency, 0) + amount
        merged["failed"] += summary["failed"]
    merged["amounts"] = dict(sorted(merged["amounts"].items()))
    merged["workers"] = len(summaries)
    return merged
