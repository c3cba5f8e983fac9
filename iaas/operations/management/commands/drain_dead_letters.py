"""Copy the task messages the broker dead-lettered into the operator console (the admin's
"Dead letters"), where an operator retries or discards them. Celery beat runs it every
minute (job ``drain_dead_letters``)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from iaas.common.cli import EXIT_REFUSED, dump_json
from iaas.operations import broker, dead_letters
from iaas.operations.models import DeadLetter


class Command(BaseCommand):
    help = "Copy dead-lettered task messages from the broker into the dead letters table."

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=1000, help="copy at most this many")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print a JSON summary")

    def handle(self, *args, limit, as_json, **options):
        if not broker.configured():
            raise CommandError("no CELERY_BROKER_URL: there is no broker to drain", returncode=EXIT_REFUSED)
        copied = dead_letters.drain(limit=limit)
        dead = DeadLetter.objects.filter(status=DeadLetter.Status.DEAD).count()
        summary = {"copied": copied, "dead": dead}
        self.stdout.write(
            dump_json(summary) if as_json else f"copied {copied} dead letter(s); {dead} wait for an operator"
        )
