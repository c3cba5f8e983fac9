#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver for the browser tests when missing.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "The browser tests need Debian's chromium and chromium-driver: apt-get install chromium chromium-driver" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" != 0 ] && sudo=sudo
echo "==> installing chromium and chromium-driver (apt)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
