"""Start a scheduled job now, as Celery beat would (its parts go to the workers), or run it
here with ``--here`` (every part in this process, the same records); ``--list`` shows the
jobs, their schedules and their last runs."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from iaas.common.cli import EXIT_PROBLEMS, EXIT_REFUSED, dump_json
from iaas.operations import broker, jobs
from iaas.operations.models import JobRun
from iaas.operations.schedule import JOBS


class Command(BaseCommand):
    help = "Start a scheduled job now (on the workers, or --here); --list the jobs."

    def add_arguments(self, parser):
        parser.add_argument("job", nargs="?", help="the job's name (see --list)")
        parser.add_argument("--here", action="store_true", help="run every part in this process")
        parser.add_argument("--list", action="store_true", dest="list_jobs", help="list the jobs")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print JSON")

    def handle(self, *args, job, here, list_jobs, as_json, **options):
        if list_jobs or not job:
            self._list(as_json=as_json)
            return
        if job not in JOBS:
            raise CommandError(f"no job {job!r}; see run_job --list", returncode=EXIT_REFUSED)
        if here or not broker.configured():
            run = jobs.run_inline(job_name=job, started_by="command")
        else:
            run = jobs.run_start(job_name=job, started_by="command")
        result = {"run": run.pk, "job": run.job, "parts": run.parts, "status": run.status}
        self.stdout.write(
            dump_json(result) if as_json else f"{run.job}: run {run.pk}, {run.parts} part(s), {run.status}"
        )
        if run.status == JobRun.Status.FAILED:
            raise SystemExit(EXIT_PROBLEMS)

    def _list(self, *, as_json: bool) -> None:
        latest = {
            name: JobRun.objects.filter(job=name).order_by("-started_at", "-id").first() for name in JOBS
        }
        rows = [
            {
                "job": job.name,
                "command": job.command,
                "schedule": job.timing,
                "partitioned": job.partitioned,
                "last_run": latest[job.name].started_at.isoformat() if latest[job.name] else None,
                "last_status": latest[job.name].status if latest[job.name] else None,
                "what": job.description,
            }
            for job in JOBS.values()
        ]
        if as_json:
            self.stdout.write(dump_json(rows))
            return
        for row in rows:
            last = f"{row['last_status']} {row['last_run']}" if row["last_run"] else "never run"
            self.stdout.write(f"{row['job']:<24} {row['schedule']:<18} {last}\n    {row['what']}")
