"""The project shell: health check, schema and docs, production settings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.db import OperationalError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.django_db
def test_healthz_answers_200_when_the_database_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.mark.django_db
def test_healthz_answers_503_when_the_database_does_not(client, monkeypatch):
    from iaas.operations import views

    class DownCursor:
        def __enter__(self):
            raise OperationalError("connection refused")

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(views.connection, "cursor", lambda: DownCursor())
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/", "/admin/login/"])
def test_schema_docs_and_admin_are_served(client, path):
    assert client.get(path).status_code == 200


def run_production_check(**env):
    environment = {
        k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "ALLOWED_HOSTS", "IAAS_SECRET_KEYS")
    }
    environment.update(DJANGO_SETTINGS_MODULE="iaas.settings.production", **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "ERROR"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


def test_production_refuses_the_development_secret_key():
    result = run_production_check(ALLOWED_HOSTS="billing.example.com")
    assert result.returncode != 0
    assert "Production needs its own SECRET_KEY" in result.stderr


def test_production_needs_allowed_hosts():
    result = run_production_check(SECRET_KEY="x" * 64)
    assert result.returncode != 0
    assert "ALLOWED_HOSTS" in result.stderr


def test_production_needs_keys_for_the_secrets_it_stores():
    result = run_production_check(SECRET_KEY="k" * 30 + "Q7#a" * 10, ALLOWED_HOSTS="billing.example.com")
    assert result.returncode != 0
    assert "Production needs IAAS_SECRET_KEYS" in result.stderr


def test_production_settings_pass_the_deploy_check():
    result = run_production_check(
        SECRET_KEY="k" * 30 + "Q7#a" * 10,
        ALLOWED_HOSTS="billing.example.com",
        IAAS_SECRET_KEYS=Fernet.generate_key().decode(),
    )
    assert result.returncode == 0, result.stderr
    # The one warning left is the opt-in HSTS preload list (SECURE_HSTS_PRELOAD).
    assert "security.W021" in result.stderr + result.stdout
    assert "security.W0" not in (result.stderr + result.stdout).replace("security.W021", "")
