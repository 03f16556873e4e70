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
# Debian's packages the tests need: a real headless Chromium for the status
# page's test, and faketime to run committers on skewed clocks.
if [ "$extras" = "dev" ]; then
    missing=""
    command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium chromium-driver"
    command -v faketime >/dev/null 2>&1 || missing="$missing faketime"
    if [ -n "$missing" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            # shellcheck disable=SC2086  # a list of package names
            apt-get install -y -qq --no-install-recommends $missing >/dev/null
        else
            echo "warning: missing Debian packages:$missing: apt-get install$missing" \
                "(the status page's and the skewed clocks' tests need them)" >&2
        fi
    fi
fi
