"""A small HTTP client for the customer API (API.md) and a gunicorn server to point it
at: what bench/http.py and bench/faults.py share. Standard library only, so a load
generator process is light next to the server it measures."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet

GUNICORN = Path(sys.executable).with_name("gunicorn")


@dataclass
class Response:
    status: int
    body: dict | None
    content_type: str = ""
    replayed: bool = False

    @property
    def problem_code(self) -> str:
        return (self.body or {}).get("code", "") if isinstance(self.body, dict) else ""


class Api:
    """One keep-alive connection (reopened when the server closes it), one customer."""

    def __init__(self, port: int, token: str | None = None, timeout: float = 30) -> None:
        self.port = port
        self.token = token
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Raises OSError (refused, reset, timed out) and http.client errors as they come."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        if key:
            headers["Idempotency-Key"] = key
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["Content-Type"] = "application/json"
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout or self.timeout)
        self.conn.timeout = timeout or self.timeout
        if self.conn.sock is not None:
            self.conn.sock.settimeout(self.conn.timeout)
        try:
            self.conn.request(method, path, body=payload, headers=headers)
            raw = self.conn.getresponse()
            data = raw.read()
        except BaseException:
            self.close()
            raise
        if raw.getheader("Connection", "").lower() == "close":
            self.close()
        content_type = raw.getheader("Content-Type", "")
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        return Response(raw.status, parsed, content_type, raw.getheader("Idempotent-Replayed") == "true")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def register(port: int, username: str) -> Api:
    """A new customer with a token (POST /api/v1/auth/register/)."""
    api = Api(port)
    response = api.request(
        "POST",
        "/api/v1/auth/register/",
        {"username": username, "email": f"{username}@bench.example", "password": secrets.token_urlsafe(16)},
    )
    if response.status != 201:
        raise RuntimeError(f"register {username}: {response.status} {response.body}")
    api.token = response.body["token"]
    return api


def open_wallet(api: Api, *, top_ups: int = 1, amount: int = 100_000_000) -> str:
    response = api.request("POST", "/api/v1/wallets/", {"currency": "EUR"}, key=str(uuid.uuid4()))
    if response.status != 201:
        raise RuntimeError(f"wallet: {response.status} {response.body}")
    wallet_id = response.body["id"]
    for _ in range(top_ups):
        top_up = api.request(
            "POST", f"/api/v1/wallets/{wallet_id}/top-ups/", {"amount": amount}, key=str(uuid.uuid4())
        )
        if top_up.status != 201:
            raise RuntimeError(f"top-up: {top_up.status} {top_up.body}")
    return wallet_id


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env(app_dir: Path, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of the app under test: production settings, sandbox payments,
    registration and requests unthrottled (the benchmark registers its customers through the
    API), throttle counts in Redis."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "iaas.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "IAAS_SECRET_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "IAAS_PAYMENT_PROVIDER": "iaas.billing.payments.SandboxPaymentProvider",
        "IAAS_THROTTLE_REGISTER": "100000/minute",
        "IAAS_THROTTLE_TOKEN": "100000/minute",
        # Every request is still counted (the cost is measured), never refused: one
        # client sends hundreds of requests a second.
        "IAAS_THROTTLE_USER": "10000000/minute",
        "IAAS_THROTTLE_ANON": "10000000/minute",
        # Counted in Redis as production does (without it, the database cache would add
        # statements to every request); a prefix of the benchmark's own.
        "REDIS_URL": os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
        "IAAS_CACHE_KEY_PREFIX": "iaas-bench",
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        # Run another worktree read-only: no __pycache__ written into it.
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(app_dir),
    }
    env.update(extra)
    return env


def manage(app_dir: Path, env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=app_dir,
        env=env,
        check=check,
        capture_output=True,
        text=True,
    )


def django_snippet(app_dir: Path, env: dict, code: str, timeout: float = 600) -> str:
    """Run Python with the app's Django set up (its own code, from ``app_dir``)."""
    script = "import django; django.setup()\n" + code
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=app_dir, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return result.stdout


RECONCILE = """
import json
from iaas.contracts import bus
from iaas.operations.reconciliation import reconcile
requeued = bus.retry_failed()
report = bus.deliver_pending()
result = reconcile()
violations = {k: [v.as_dict() for v in vs[:5]] for k, vs in result.violations.items() if vs}
print(json.dumps({"requeued": requeued, "delivered": report.delivered, "failed": report.failed,
                  "reconcile_ok": result.ok, "pending_after": result.pending_events,
                  "violations": violations}, default=str))
"""


def deliver_and_reconcile(app_dir: Path, env: dict) -> dict:
    """What an operator runs after an incident: deliver_events --retry-failed, then
    reconcile. (Called as Python: ``manage.py reconcile`` comes from another branch.)"""
    return json.loads(django_snippet(app_dir, env, RECONCILE).strip().splitlines()[-1])


class Gunicorn:
    """A gunicorn serving the app from ``app_dir``, in its own process group (so a
    SIGKILL reaches the master and every worker, and nothing else)."""

    def __init__(
        self, app_dir: Path, env: dict, *, port: int, workers: int, config: Path | None = None, log=None
    ):
        self.app_dir, self.env, self.port, self.workers, self.config = app_dir, env, port, workers, config
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        args = [
            str(GUNICORN),
            "iaas.wsgi",
            "--chdir",
            str(self.app_dir),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            "--timeout",
            "30",
            "--graceful-timeout",
            "5",
            # gunicorn 27's control socket defaults to one path per user: another
            # engineer's gunicorn may be using it.
            "--no-control-socket",
        ]
        if self.config:
            args += ["--config", str(self.config)]
        self.proc = subprocess.Popen(
            args, cwd=self.app_dir, env=self.env, stdout=self.log, stderr=self.log, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}")
            try:
                if Api(self.port, timeout=2).request("GET", "/healthz").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("gunicorn did not answer /healthz in time")

    def kill(self) -> None:
        """SIGKILL the master and its workers: no graceful anything."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
