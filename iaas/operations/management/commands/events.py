"""``events --list``: every event type the contracts define, with the subscriptions that
receive it (stable name, subscribing context, whether it has a batch form and whether it
takes only some events of its type). An event with no subscription is listed too: it is
published, and nobody receives it yet."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from iaas.common.cli import dump_json
from iaas.contracts import bus
from iaas.contracts.events import EVENT_TYPES


class Command(BaseCommand):
    help = "List the event types and the subscriptions that receive them (event, handler, context)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--list", action="store_true", help="list events and their handlers (the default)"
        )
        parser.add_argument("--json", action="store_true", dest="as_json", help="print JSON")

    def handle(self, *args, as_json, **options):
        rows = [
            (name, subscription)
            for name, event_type in sorted(EVENT_TYPES.items())
            if event_type.__module__.startswith("iaas.")
            for subscription in bus.subscriptions(event_type) or [None]
        ]
        if as_json:
            self.stdout.write(
                dump_json(
                    [
                        {"event": name, **(vars(s) if s else {"name": None, "context": None})}
                        for name, s in rows
                    ]
                )
            )
            return
        width = max(len(name) for name, _ in rows)
        handler_width = max(len(s.name) if s else 1 for _, s in rows)
        self.stdout.write(f"{'event':<{width}}  {'handler':<{handler_width}}  context")
        for name, s in rows:
            if s is None:
                self.stdout.write(f"{name:<{width}}  {'-':<{handler_width}}  -  (no subscriber)")
                continue
            notes = [
                note for note, on in (("batch", s.batch), ("its own context's only", s.conditional)) if on
            ]
            extra = f"  ({', '.join(notes)})" if notes else ""
            self.stdout.write(f"{name:<{width}}  {s.name:<{handler_width}}  {s.context}{extra}")
