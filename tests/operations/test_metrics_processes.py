"""/metrics under gunicorn with several worker processes, as production runs it: with
PROMETHEUS_MULTIPROC_DIR each worker writes its counters there, and every scrape,
whichever worker answers it, shows the sum over all of them. The same server's log lines
are JSON, each with its request's id."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_throttle_processes import GUNICORN, ROOT, free_port, production_env
from tests.cache import delete_prefix, redis_client

TOKEN = secrets.token_urlsafe(24)


def get(port: int, path: str, **headers) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def gunicorn(transactional_db, tmp_path):
    """A production gunicorn with two workers against the test database."""
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    prefix = f"{settings.IAAS_CACHE_KEY_PREFIX}:metrics-{uuid.uuid4().hex[:8]}"
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = production_env(prefix, IAAS_METRICS_TOKEN=TOKEN, PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(GUNICORN), "iaas.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "--timeout", "30", "--no-control-socket"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            wait_ready(port, process, log_path)
            yield port, multiproc, log_path
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            delete_prefix(redis_client(), prefix)


def wait_ready(port: int, process: subprocess.Popen, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"gunicorn exited: {log_path.read_text()[-2000:]}"
        try:
            if get(port, "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"gunicorn not ready: {log_path.read_text()[-2000:]}")


def not_found_count(port: int) -> float:
    status, body = get(port, "/metrics", Authorization=f"Bearer {TOKEN}")
    assert status == 200, body
    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    assert "iaas_outbox_pending" in families  # the core's gauges, read by the worker that answered
    for sample in families["django_http_responses_total_by_status"].samples:
        if sample.name.endswith("_total") and sample.labels == {"status": "404"}:
            return sample.value
    return 0


def workers_that_counted(multiproc: Path) -> set[str]:
    """The worker processes with counter files (counter_<pid>.db)."""
    return {path.stem.removeprefix("counter_") for path in multiproc.glob("counter_*.db")}


@pytest.mark.concurrency
def test_every_scrape_adds_up_every_worker(gunicorn):
    port, multiproc, _ = gunicorn
    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(10):  # until both workers have answered some
            statuses = list(pool.map(lambda i: get(port, f"/no-such-page-{i}")[0], range(16)))
            assert set(statuses) == {404}
            sent += len(statuses)
            if len(workers_that_counted(multiproc)) >= 2:
                break
    assert len(workers_that_counted(multiproc)) >= 2, "one worker answered everything"

    # Each scrape is answered by one worker or the other; each shows every worker's 404s.
    assert [not_found_count(port) for _ in range(6)] == [sent] * 6


@pytest.mark.concurrency
def test_the_server_logs_json_lines_with_the_request_id(gunicorn):
    port, _, log_path = gunicorn
    request_id = f"proxy-{uuid.uuid4().hex[:12]}"
    status, _ = get(port, "/no-such-page", **{"X-Request-ID": request_id})
    assert status == 404
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        found = [line for line in lines if line.get("request_id") == request_id]
        if found:
            break
        time.sleep(0.1)
    assert found, log_path.read_text()[-2000:]
    assert found[0]["message"] == "Not Found: /no-such-page"
    assert found[0]["level"] == "WARNING"
    assert found[0]["logger"] == "django.request"
