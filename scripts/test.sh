#!/usr/bin/env bash
# Set up everything on a fresh machine, check lint, formatting and types,
# and run the test suite. Extra arguments go to pytest (e.g. scripts/test.sh -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# mypy follows the installed names (bqspool.buffer, ...): lay the three
# folders out that way for it, as symlinks.
mkdir -p .typecheck/bqspool
for pkg in buffer loader schemas; do ln -sfn "../../$pkg" ".typecheck/bqspool/$pkg"; done
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
