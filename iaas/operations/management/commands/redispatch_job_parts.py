"""Publish again the parts of job runs still queued long after their run began: a
publisher that crashed between creating a run and publishing its parts (or a broker
that refused them) leaves parts nothing would ever run. Celery beat runs it every 15
minutes (job ``redispatch``); a part published twice runs once more, harmlessly."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from iaas.common.cli import dump_json, duration_option
from iaas.operations import broker, jobs


class Command(BaseCommand):
    help = "Publish again the parts of job runs still queued after --older-than (default 15m)."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", default="15m", help="runs begun at least this long ago")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print a JSON summary")

    def handle(self, *args, older_than, as_json, **options):
        published = jobs.runs_redispatch(older_than=duration_option(older_than)) if broker.configured() else 0
        self.stdout.write(
            dump_json({"published": published}) if as_json else f"published {published} queued part(s) again"
        )
