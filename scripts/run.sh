#!/usr/bin/env bash
# The first README command: set up and serve the app on http://127.0.0.1:8000.
# Embedded SQLite under var/ unless DATABASE_URL is set. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh runtime
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-iaas.settings.development}
.venv/bin/python manage.py migrate --no-input
.venv/bin/python manage.py seed_demo
# Beside the server, the event delivery worker: settlements, releases, and customers'
# webhooks and emails (to the console in development) go out as they would in production
# without a broker. It stops with the server.
# Both in the background, the script waiting: Ctrl-C or a SIGTERM to it stops both.
.venv/bin/python manage.py deliver_events --loop --interval 2 &
worker=$!
.venv/bin/python manage.py runserver "${ADDRESS:-127.0.0.1:8000}" &
server=$!
trap 'kill "$worker" "$server" 2>/dev/null || true' EXIT INT TERM
wait "$server"
