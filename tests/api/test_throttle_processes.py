"""The throttle holds across processes: two gunicorn servers (separate processes, as two
hosts behind a load balancer would be) against the test database, counting in Redis
under a key prefix of this test's own. Requests alternating between them draw on one
count: with a limit of 5 per hour, 5 succeed in all, and the next one on either server
is a 429 ``throttled`` with ``Retry-After``. Needs Redis: without it this test fails."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.db import connection

from tests.cache import delete_prefix, redis_client

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"
LIMIT = 5
WINDOW = 3600  # "5/hour": windows are aligned to the epoch (iaas/api/throttles.py)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    return f"postgres://{quote(db['USER'], safe='')}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


test_database_url.__test__ = False  # a helper, not a test


def production_env(cache_prefix: str, **more: str) -> dict[str, str]:
    """The environment of a production gunicorn against the test database, counting in
    Redis under ``cache_prefix`` (the test deletes it afterwards)."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "iaas.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "IAAS_SECRET_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "IAAS_CACHE_KEY_PREFIX": cache_prefix,
        "LOG_LEVEL": "WARNING",
        **more,
    }


def call(port: int, method: str, path: str, body: dict | None = None, token: str | None = None):
    """(status, headers, JSON body) of one request; an HTTP error is an answer too."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"} | ({"Authorization": f"Token {token}"} if token else {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read() or b"null")


class Server:
    def __init__(self, env: dict, log: Path):
        self.port = free_port()
        self.log = open(log, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [str(GUNICORN), "iaas.wsgi", "--bind", f"127.0.0.1:{self.port}", "--workers", "1",
             "--timeout", "30", "--no-control-socket"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"gunicorn exited: {Path(self.log.name).read_text()[-2000:]}"
            try:
                if call(self.port, "GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"gunicorn not ready: {Path(self.log.name).read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def two_servers(transactional_db, tmp_path):
    prefix = f"{settings.IAAS_CACHE_KEY_PREFIX}:processes-{uuid.uuid4().hex[:8]}"
    env = production_env(prefix, IAAS_THROTTLE_USER=f"{LIMIT}/hour")
    servers = [Server(env, tmp_path / f"gunicorn-{i}.log") for i in (1, 2)]
    try:
        for server in servers:
            server.wait_ready()
        yield servers, prefix
    finally:
        for server in servers:
            server.stop()
        delete_prefix(redis_client(), prefix)


@pytest.mark.concurrency
def test_requests_alternating_between_two_servers_share_one_count(two_servers):
    (first, second), prefix = two_servers
    assert first.proc.pid != second.proc.pid
    # Registered through the servers (their password hasher, not the suite's fast one).
    customer = {"username": "shared", "email": "shared@example.com", "password": "correct-horse-battery"}
    status, _, body = call(first.port, "POST", "/api/v1/auth/register/", customer)
    assert status == 201, body
    token = body["token"]
    # Not at the very end of an hour: the five requests and the sixth share one window.
    left = WINDOW - time.time() % WINDOW
    if left < 30:
        time.sleep(left + 1)

    statuses = []
    for index in range(LIMIT):
        server = (first, second)[index % 2]
        statuses.append(call(server.port, "GET", "/api/v1/wallets/", token=token)[0])
    assert statuses == [200] * LIMIT  # 3 on the first server, 2 on the second

    for server in (second, first):  # the next on either is refused
        status, headers, body = call(server.port, "GET", "/api/v1/wallets/", token=token)
        assert status == 429, body
        assert headers["Content-Type"] == "application/problem+json"
        assert body["code"] == "throttled"
        assert 1 <= int(headers["Retry-After"]) <= WINDOW

    # One counter in Redis, under the servers' prefix, holding all seven requests.
    client = redis_client()
    keys = [key.decode() for key in client.scan_iter(match=f"{prefix}:*throttle:user:*")]
    assert len(keys) == 1, keys
    assert int(client.get(keys[0])) == LIMIT + 2
