"""Deliver pending outbox rows to their handlers. Safe in several processes at once:
each row is claimed with SELECT ... FOR UPDATE SKIP LOCKED."""

from __future__ import annotations

import json
import signal
import time

from django.core.management.base import BaseCommand

from iaas.billing.payments import auto
from iaas.common.memory import relaxed_gc
from iaas.contracts import bus
from iaas.notifications import sender

LOOP_BATCH = 100


class Command(BaseCommand):
    help = "Deliver pending events from the outbox (once, or --loop as a worker)."

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="keep delivering until SIGTERM/SIGINT")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds to sleep when idle (--loop)")
        parser.add_argument("--limit", type=int, default=None, help="deliver at most this many rows per pass")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=100,
            help="apply up to this many of one wallet's pending settlements in one transaction",
        )
        parser.add_argument("--retry-failed", action="store_true", help="put failed rows back in line first")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print a JSON summary")

    def handle(self, *args, loop, interval, limit, batch_size, retry_failed, as_json, **options):
        if retry_failed:
            requeued = bus.retry_failed()
            self.stderr.write(f"requeued {requeued} rows")
        stopping = {"now": False}

        def stop(signum, frame):
            stopping["now"] = True

        previous = {}
        if loop:
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, stop)
        total = bus.DeliveryReport()
        try:
            while True:
                # A worker delivers in batches, so SIGTERM is heard between two of them
                # (the row being delivered always finishes: it is one transaction).
                with relaxed_gc():
                    report = bus.deliver_pending(
                        limit=limit or (LOOP_BATCH if loop else None), batch_size=batch_size
                    )
                total = total + report
                sent = self._send_notifications()
                charged = self._run_auto_top_ups()
                if not loop or stopping["now"]:
                    break
                if report.delivered + report.failed + sent + charged == 0:
                    deadline = time.monotonic() + interval
                    while time.monotonic() < deadline and not stopping["now"]:
                        time.sleep(min(0.1, interval))
                if stopping["now"]:
                    break
        finally:
            for signum, handler in previous.items():  # a worker's handlers, not its host's
                signal.signal(signum, handler)
        pending = bus.pending_count()
        self._print(total, pending, as_json=as_json)
        if total.failed:
            raise SystemExit(1)

    def _send_notifications(self) -> int:
        """Where no broker is configured, this loop also sends customers' webhooks and
        emails (with one, the `notify` job does, on the workers): one round per pass, so
        the settlements it delivers never wait long behind slow endpoints."""
        if bus.relayed():
            return 0
        return sum(sender.send_due(rounds=1).as_dict().values())

    def _run_auto_top_ups(self) -> int:
        """Where no broker is configured, this loop also charges the automatic top-ups that
        are due (with one, the `auto_top_up` job does): one round per pass, right after
        the delivery that marked them due."""
        if bus.relayed():
            return 0
        return auto.auto_top_ups_run()["claimed"]

    def _print(self, report: bus.DeliveryReport, pending: int, *, as_json: bool) -> None:
        if as_json:
            summary = {"delivered": report.delivered, "failed": report.failed, "pending": pending}
            self.stdout.write(json.dumps(summary, sort_keys=True))
        else:
            self.stdout.write(
                f"delivered {report.delivered}, failed {report.failed}, still pending {pending}"
            )
