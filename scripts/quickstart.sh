#!/usr/bin/env bash
# README command 1: install, then run the default benchmark (works offline).
# Extra arguments go to `python -m harness.run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh report  # plotly, for the HTML report the run writes at the end
exec .venv/bin/python -m harness.run "$@"
