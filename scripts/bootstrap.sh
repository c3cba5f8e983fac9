#!/usr/bin/env bash
# Creates .venv and installs the pinned requirements; a second run with unchanged
# requirement files does nothing. Usage: scripts/bootstrap.sh [runtime|dev]
set -euo pipefail
cd "$(dirname "$0")/.."

flavour=${1:-runtime}
case "$flavour" in
  runtime) req=requirements.txt ;;
  dev) req=requirements-dev.txt ;;
  *) echo "usage: $0 [runtime|dev]" >&2; exit 2 ;;
esac

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' 2>/dev/null; then
  echo "Python 3.11 or newer is needed (found: $("$python" --version 2>&1))." >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$python" -m venv .venv
fi

stamp=.venv/.installed-$flavour
digest=$(cat requirements.txt "$req" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
  exit 0
fi
echo "==> installing $req"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
echo "$digest" > "$stamp"
