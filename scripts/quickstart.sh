#!/usr/bin/env bash
# README command 1: install, then run the default benchmark (works offline).
# Extra arguments go to `python -m harness.run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m harness.run "$@"
