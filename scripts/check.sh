#!/usr/bin/env bash
# Lint + format check + the test suite. Expects an installed .venv (see scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# pytest exits 5 when it collects no tests; that is a failure here, as any non-zero code is.
.venv/bin/python -m pytest -q -rs --durations=25 "$@"
