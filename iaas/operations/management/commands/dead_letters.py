"""Dead-lettered tasks from the command line, as the admin shows them: list them, retry
(publish again to where they came from) or discard them."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from iaas.common.cli import EXIT_REFUSED, dump_json
from iaas.operations import dead_letters
from iaas.operations.models import DeadLetter


class Command(BaseCommand):
    help = "List dead-lettered tasks; --retry ID... or --discard ID... (or 'all')."

    def add_arguments(self, parser):
        action = parser.add_mutually_exclusive_group()
        action.add_argument(
            "--retry", nargs="+", metavar="ID", help="publish these again ('all': every dead one)"
        )
        action.add_argument("--discard", nargs="+", metavar="ID", help="close these without running them")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print JSON")

    def handle(self, *args, retry, discard, as_json, **options):
        if retry or discard:
            ids = self._ids(retry or discard)
            done = (dead_letters.retry if retry else dead_letters.discard)(ids, operator_id=None)
            verb = "retried" if retry else "discarded"
            self.stdout.write(dump_json({verb: done}) if as_json else f"{verb} {done} dead letter(s)")
            return
        letters = DeadLetter.objects.filter(status=DeadLetter.Status.DEAD).order_by("dead_at", "id")
        rows = [
            {
                "id": letter.pk,
                "task": dead_letters.summary(letter),
                "queue": letter.queue,
                "reason": letter.reason,
                "deaths": letter.deaths,
                "dead_at": letter.dead_at.isoformat(),
            }
            for letter in letters
        ]
        if as_json:
            self.stdout.write(dump_json(rows))
            return
        for row in rows:
            self.stdout.write(
                f"{row['id']:>6}  {row['dead_at']}  {row['reason']:<15} {row['queue']}  {row['task']}"
            )
        self.stdout.write(f"{len(rows)} dead letter(s)")

    @staticmethod
    def _ids(values: list[str]) -> list[int]:
        if values == ["all"]:
            return list(DeadLetter.objects.filter(status=DeadLetter.Status.DEAD).values_list("pk", flat=True))
        try:
            return [int(value) for value in values]
        except ValueError:
            raise CommandError("ids are numbers (or 'all')", returncode=EXIT_REFUSED) from None
