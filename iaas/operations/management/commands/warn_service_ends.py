"""Warn the owners of services about to be ended for non-payment (ServiceEndsSoon): every
selling context's services suspended for ``unpaid`` alone whose grace runs out within
IAAS_END_WARNING_HOURS, once per suspension (iaas.spending.ending). Run it every ten
minutes (the job ``warn_ends``): a service suspended with less grace than the window is
warned by the first run after its suspension.

Safe to run again (a warned service records it) and next to the batch runs: it locks
service rows only, SKIP LOCKED, and a service held elsewhere is warned by the next run.
"""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from iaas.common.cli import dump_json, duration_option, format_duration
from iaas.common.memory import relaxed_gc
from iaas.contracts.selling import UnknownContext
from iaas.spending import ending
from iaas.spending.apps import selling_context_config, sold_contexts


class Command(BaseCommand):
    help = "Warn owners of services suspended unpaid that their end is near (ServiceEndsSoon)."

    def add_arguments(self, parser):
        parser.add_argument("--contexts", help="comma-separated contexts (default: every selling context)")
        parser.add_argument(
            "--within", help="warn of ends this close (e.g. 24h, 2d; default: IAAS_END_WARNING_HOURS)"
        )
        parser.add_argument(
            "--batch-size", type=int, default=None, help="services per batch (IAAS_BATCH_SIZE)"
        )
        parser.add_argument("--at", default=None, help="the run's moment (ISO 8601; default: now)")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print a JSON summary")

    def handle(self, *args, contexts, within, batch_size, at, as_json, **options):
        now = dt.datetime.fromisoformat(at) if at else timezone.now()
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size is at least 1")
        window = duration_option(within) if within else ending.end_warning_window()
        shown_window = format_duration(window)
        try:
            sold = (
                [selling_context_config(name).sold_services() for name in contexts.split(",")]
                if contexts
                else sold_contexts()
            )
        except UnknownContext as error:
            raise CommandError(str(error)) from None
        with relaxed_gc():
            warned = {
                services.context: ending.warn_ends(services, now=now, window=window, size=batch_size)
                for services in sold
                if services is not None
            }
        summary = {"now": now.isoformat(), "within": shown_window, "warned": warned}
        if as_json:
            self.stdout.write(dump_json(summary))
            return
        for name, count in warned.items():
            self.stdout.write(
                f"{name}: warned the owners of {count} service(s) ending within {summary['within']}"
            )
