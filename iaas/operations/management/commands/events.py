"""``events --list``: every event type the contracts define, with the subscriptions that
receive it (stable name, subscribing context, whether it has a batch form, whether it
takes only some events of its type, and whether it is relayed to the broker). An event
with no subscription is listed too: it is published (and recorded), and nobody receives
it yet.

``events --feed NAME --since WHEN``: give a subscription the events of its type recorded
since then that it has no row for (a subscription added later, or taking events again):
pending rows that ``deliver_events`` delivers. Safe to run again."""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from iaas.common.cli import EXIT_REFUSED, dump_json
from iaas.contracts import bus
from iaas.contracts.events import EVENT_TYPES


class Command(BaseCommand):
    help = "List the event types and the subscriptions that receive them (event, handler, context)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--list", action="store_true", help="list events and their handlers (the default)"
        )
        parser.add_argument(
            "--feed", metavar="NAME", help="give this subscription the recorded events it missed"
        )
        parser.add_argument(
            "--since", type=dt.datetime.fromisoformat, help="with --feed: events recorded since (ISO 8601)"
        )
        parser.add_argument("--json", action="store_true", dest="as_json", help="print JSON")

    def handle(self, *args, as_json, feed, since, **options):
        if feed:
            self._feed(feed, since, as_json=as_json)
            return
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
            flags = (("batch", s.batch), ("its own context's only", s.conditional), ("relayed", s.relay))
            notes = [note for note, on in flags if on]
            extra = f"  ({', '.join(notes)})" if notes else ""
            self.stdout.write(f"{name:<{width}}  {s.name:<{handler_width}}  {s.context}{extra}")

    def _feed(self, name: str, since: dt.datetime | None, *, as_json: bool) -> None:
        if since is None:
            raise CommandError("--feed needs --since (how far back to take events)", returncode=EXIT_REFUSED)
        if timezone.is_naive(since):
            since = timezone.make_aware(since)
        try:
            added = bus.feed(name, since=since)
        except bus.UnknownSubscription as error:
            raise CommandError(str(error), returncode=EXIT_REFUSED) from None
        if as_json:
            self.stdout.write(dump_json({"subscription": name, "since": since.isoformat(), "fed": added}))
        else:
            self.stdout.write(f"{name}: {added} event(s) since {since:%Y-%m-%d %H:%M %Z} put in line")
