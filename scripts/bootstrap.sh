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
