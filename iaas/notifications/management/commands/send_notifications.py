"""Send the due webhook deliveries and emails (once, or --loop as a worker). Safe in
several processes at once: each row is claimed for a lease with SKIP LOCKED."""

from __future__ import annotations

import signal
import time

from django.core.management.base import BaseCommand

from iaas.common.cli import dump_json
from iaas.notifications import sender


class Command(BaseCommand):
    help = "Send due webhook deliveries and emails (once, or --loop until SIGTERM)."

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="keep sending until SIGTERM/SIGINT")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds to sleep when idle (--loop)")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print a JSON summary")

    def handle(self, *args, loop, interval, as_json, **options):
        stopping = {"now": False}
        if loop:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stopping.update(now=True))
        total = sender.SendReport()
        while True:
            report = sender.send_due()
            for name, value in report.as_dict().items():
                setattr(total, name, getattr(total, name) + value)
            if not loop or stopping["now"]:
                break
            if not any(report.as_dict().values()):
                deadline = time.monotonic() + interval
                while time.monotonic() < deadline and not stopping["now"]:
                    time.sleep(0.1)
        summary = total.as_dict()
        self.stdout.write(
            dump_json(summary) if as_json else ", ".join(f"{k} {v}" for k, v in summary.items())
        )
