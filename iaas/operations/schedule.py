"""The scheduled jobs, in code: what each runs, whether it fans out per wallet partition,
and when Celery beat starts it (one beat per deployment). Without a broker the same
commands run from cron (the README has the table).

A job is one management command; its tasks run that command on one wallet partition
each (``--partition i/n``, the batch rules' hash partitions) with the run's moment
(``--at``), so a run on Celery does exactly what the command does from cron, and every
part is safe to run again (a redelivered task repeats nothing: each command is
idempotent by its records).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from celery.schedules import crontab, schedule


@dataclass(frozen=True)
class Job:
    name: str
    command: str
    when: schedule
    description: str
    partitioned: bool = False  # fans out per wallet partition (the command takes --partition, --at)
    options: tuple[str, ...] = ()  # more arguments for the command
    # Arguments whose value is a setting, read when the job runs: (option, setting name).
    setting_options: tuple[tuple[str, str], ...] = ()
    json: bool = True  # the command takes --json (its summary is kept with the run)
    # A run that finds nothing to do is still recorded; runs of jobs that repeat every few
    # seconds are kept this long, the others IAAS_JOB_HISTORY_DAYS.
    history: dt.timedelta | None = None
    # A job that repeats every few seconds: a start while a run of it is open, or within
    # this long of the last one, does nothing (iaas.operations.jobs.start_is_redundant).
    period: dt.timedelta | None = None
    alert_on_problems: bool = False  # a run that reports problems is logged as an error

    def arguments(self, *, partition: str | None, at: dt.datetime) -> list[str]:
        """The command's arguments for one part of a run."""
        from django.conf import settings

        args = ["--json"] if self.json else []
        if self.partitioned:
            args += ["--partition", partition or "0/1", "--at", at.isoformat()]
        for option, name in self.setting_options:
            args += [option, str(getattr(settings, name))]
        return [*args, *self.options]

    @property
    def timing(self) -> str:
        """When it runs, as an operator reads it: a crontab line, or "every 10 s"."""
        if isinstance(self.when, crontab):
            c = self.when
            return " ".join(
                str(part)
                for part in (
                    c._orig_minute,
                    c._orig_hour,
                    c._orig_day_of_month,
                    c._orig_month_of_year,
                    c._orig_day_of_week,
                )
            )
        return f"every {self.when.run_every.total_seconds():g} s"


def every(seconds: float) -> schedule:
    return schedule(dt.timedelta(seconds=seconds))


def repeating(name: str, command: str, seconds: float, description: str, **more) -> Job:
    """A job that repeats every few seconds: the starts that queued up while the workers
    were busy or down make one run, not a burst, and its runs are kept a day."""
    period = dt.timedelta(seconds=seconds)
    return Job(
        name, command, every(seconds), description, history=dt.timedelta(days=1), period=period, **more
    )


JOBS: dict[str, Job] = {
    job.name: job
    for job in [
        Job(
            "meter",
            "bill_usage",
            crontab(minute="*/10"),
            "accrue running services' hours; suspend, resume, end",
            partitioned=True,
        ),
        Job(
            "settle",
            "settle_usage",
            crontab(minute=50),
            "close the usage that is due into charges; Billing books them per wallet",
            partitioned=True,
        ),
        Job(
            "renew",
            "renew_subscriptions",
            crontab(minute=5),
            "renew hosting subscriptions whose month ends; suspend, resume, cancel",
            partitioned=True,
        ),
        Job(
            "warn_ends",
            "warn_service_ends",
            crontab(minute="*/10"),
            "tell owners of services suspended unpaid, once, that their end is near (IAAS_END_WARNING_HOURS)",
        ),
        Job(
            "release_idle",
            "release_idle_allowances",
            crontab(minute=20),
            "give back allowance that sat idle (the contexts release it, Billing applies it)",
            setting_options=(("--older-than", "IAAS_RELEASE_IDLE_AFTER"),),
        ),
        Job(
            "invoice",
            "issue_invoices",
            crontab(minute=0, hour="3-6", day_of_month=1),
            "issue last month's invoices: a run refused while last month's charges are still "
            "settling is done by the next, and the runs after a success issue nothing",
        ),
        Job("purge_outbox", "purge_outbox", crontab(minute=27, hour=3), "delete old delivered outbox rows"),
        Job(
            "purge_idempotency_keys",
            "purge_idempotency_keys",
            crontab(minute=17, hour=3),
            "delete expired Idempotency-Key records",
            json=False,
        ),
        Job(
            "purge_operation_tokens",
            "purge_operation_tokens",
            crontab(minute=37, hour=3),
            "delete old one-time tokens of operator forms",
            json=False,
        ),
        Job(
            "purge_task_history",
            "purge_task_history",
            crontab(minute=47, hour=3),
            "delete old job runs, inbox records and handled dead letters",
        ),
        Job(
            "reconcile",
            "reconcile",
            crontab(minute=40),
            "check every invariant; a violation is logged as an error and shown in /metrics",
            alert_on_problems=True,
        ),
        Job(
            "reconcile_deep",
            "reconcile",
            crontab(minute=30, hour=2),
            "reconcile, also re-deriving Billing's running totals from the reservation record",
            options=("--deep",),
            alert_on_problems=True,
        ),
        repeating(
            "deliver",
            "deliver_events",
            10,
            "deliver the outbox to the handlers that share its database (settlements, releases)",
            options=("--batch-size", "100", "--limit", "5000"),
        ),
        repeating(
            "relay",
            "relay_events",
            5,
            "relay outbox rows of consumers outside the money transaction to the broker",
        ),
        repeating(
            "notify",
            "send_notifications",
            5,
            "send customers' due webhook deliveries and emails (retries included)",
        ),
        repeating(
            "auto_top_up",
            "run_auto_top_ups",
            10,
            "charge saved cards for the automatic top-ups that are due (retries with backoff, a daily cap)",
        ),
        Job(
            "finish_top_ups",
            "finish_top_ups",
            crontab(minute=35),
            "ask the payment provider about top-ups pending a while: credit the paid ones whose "
            "webhook never came, cancel the ones left unpaid for IAAS_TOP_UP_EXPIRE_AFTER_DAYS",
        ),
        Job(
            "purge_notifications",
            "purge_notifications",
            crontab(minute=57, hour=3),
            "delete old webhook attempts, finished deliveries and sent emails",
        ),
        repeating(
            "drain_dead_letters",
            "drain_dead_letters",
            60,
            "copy dead-lettered task messages into the console",
        ),
    ]
}


def beat_schedule() -> dict:
    """Celery beat's schedule: each job's start task on the default queue."""
    return {
        job.name: {
            "task": "iaas.jobs.start",
            "schedule": job.when,
            "kwargs": {"job": job.name, "started_by": "beat"},
        }
        for job in JOBS.values()
    }


def job(name: str) -> Job:
    try:
        return JOBS[name]
    except KeyError:
        raise LookupError(f"no job {name!r}; the jobs are: {', '.join(JOBS)}") from None
