#!/usr/bin/env bash
# Set up everything on a fresh machine and run the main job on the embedded
# default: the demo in scripts/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh dev
exec .venv/bin/python scripts/demo.py "$@"
