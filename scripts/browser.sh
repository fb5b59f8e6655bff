#!/usr/bin/env bash
# Make sure the headless browser the console's browser test drives (Debian's chromium, through
# Playwright) is installed: like scripts/services.sh for PostgreSQL and Redis, it installs it from
# Debian's packages when running as root, and is an error otherwise. The test never skips.
set -euo pipefail

find_chromium() { command -v chromium || command -v chromium-browser || true; }

if [ -z "$(find_chromium)" ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "browser: chromium is missing; install Debian's chromium package (apt-get install chromium)" >&2
    exit 1
  fi
  echo "browser: installing chromium from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null
fi
[ -n "$(find_chromium)" ] || { echo "browser: chromium did not install" >&2; exit 1; }
echo "browser: $(find_chromium) is installed" >&2
