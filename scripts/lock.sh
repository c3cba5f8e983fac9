#!/usr/bin/env bash
# Compiles the top-level requirements (*.in) into fully pinned lock files (*.txt):
# every package the project installs, transitive ones included, at an exact version.
# Run after changing a *.in file; commit both.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=var/pip-tools
[ -x "$tools/bin/pip-compile" ] || { python3 -m venv "$tools" && "$tools/bin/pip" install -q pip-tools==7.6.2; }
"$tools/bin/pip-compile" --quiet --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
  --output-file requirements.txt requirements.in
"$tools/bin/pip-compile" --quiet --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
  --output-file requirements-dev.txt requirements-dev.in
