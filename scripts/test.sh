#!/usr/bin/env bash
# The second README command: set up and run the whole suite (lint, format, import
# boundaries, pytest) against PostgreSQL. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh dev
scripts/ensure-browser.sh

DATABASE_URL=$(scripts/ensure-postgres.sh)
export DATABASE_URL
export DJANGO_SETTINGS_MODULE=iaas.settings.test

echo "==> ruff check";        .venv/bin/ruff check .
echo "==> ruff format";       .venv/bin/ruff format --check --quiet .
echo "==> import boundaries"; .venv/bin/lint-imports --no-cache
echo "==> migrations";        .venv/bin/python manage.py makemigrations --check --dry-run >/dev/null
echo "==> pytest";            .venv/bin/pytest "$@"
