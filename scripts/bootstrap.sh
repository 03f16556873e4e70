#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv in .venv and install bqspool
# into it with the extras named in $1 (default: dev). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"
# The status page's test drives a real headless Chromium: Debian's packages.
if [ "$extras" = "dev" ] && ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    else
        echo "warning: chromium and chromium-driver are missing: apt-get install chromium chromium-driver" \
            "(the status page's test needs them)" >&2
    fi
fi
