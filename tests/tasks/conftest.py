"""Real Celery workers on the real RabbitMQ (ARCHITECTURE.md: the engine's behaviour is
never tested in eager mode). Each worker is ``celery -A iaas worker`` in a process of its
own against the test database, on the queues of this test database's prefix (test
settings), which the session purges when it starts. Without RabbitMQ these tests fail:
declaring the queues is the first thing they do."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from iaas.operations import broker

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0


def database_url() -> str:
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    return f"postgres://{quote(db['USER'], safe='')}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def engine_env(**more: str) -> dict[str, str]:
    """The environment of a worker or beat process: the test settings on the test
    database, and this run's broker and queues."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "iaas.settings.test",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "IAAS_TASK_QUEUE_PREFIX": settings.IAAS_TASK_QUEUE_PREFIX,
        "PYTHONUNBUFFERED": "1",
        **more,
    }


class CeleryWorker:
    """``celery -A iaas worker`` against the test database, its log read as it comes."""

    def __init__(
        self, name: str, *, queues: list[str] | None, include: str | None, env: dict[str, str]
    ) -> None:
        self.name = name
        argv = [
            sys.executable, "-m", "celery", "-A", "iaas", "worker", "-l", "INFO", "--concurrency", "1",
            "-n", f"{name}@%h", "--without-mingle", "--without-gossip", "--without-heartbeat",
        ]  # fmt: skip
        if queues:
            argv += ["-Q", ",".join(queues)]
        if include:
            argv += ["--include", include]
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=engine_env(**env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> str:
        """Read the log until a line contains ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"worker {self.name} exited:\n" + "\n".join(self.log[-40:]))
            self.log.append(line)
            if text in line:
                return line
        raise AssertionError(f"worker {self.name} never logged {text!r}:\n" + "\n".join(self.log[-40:]))

    def log_count(self, *texts: str) -> int:
        """How many lines logged so far (read now) contain each of ``texts``."""
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if line is not None:
                self.log.append(line)
        return sum(all(text in line for text in texts) for line in self.log)

    def kill(self) -> None:
        """SIGKILL the worker and its pool (the whole process group): nothing is acknowledged."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(TIMEOUT)

    def stop(self) -> None:
        """A warm shutdown (SIGTERM): the running task finishes, then the worker exits."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def _broker_queues() -> None:
    """This test database's queues, declared and emptied (what an aborted earlier run
    left there is not this run's)."""
    with broker.app().connection_for_write() as conn:
        broker.declare_topology(conn)
        layout = broker.topology()
        for declared in [*layout.queues(), layout.dead_letter_queue_declaration()]:
            declared(conn.default_channel).purge()


@pytest.fixture
def start_worker(_broker_queues) -> Iterator[Callable[..., CeleryWorker]]:
    """Start workers (stopped, or killed, when the test ends, before its database is
    flushed)."""
    started: list[CeleryWorker] = []

    def start(
        name: str = "w1", *, queues: list[str] | None = None, include: str | None = None, **env: str
    ) -> CeleryWorker:
        worker = CeleryWorker(name, queues=queues, include=include, env=env)
        started.append(worker)  # before it is ready: a worker that never gets there is killed too
        worker.wait_for("ready.")
        return worker

    yield start
    for worker in started:
        worker.kill()


def wait_until(condition: Callable[[], object], *, timeout: float = TIMEOUT, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or condition}")


@pytest.fixture
def operator_groups(db):
    from iaas.operations.roles import install_operator_groups

    install_operator_groups()
