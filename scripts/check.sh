#!/usr/bin/env bash
# Lint + format check + the test suite. Expects an installed .venv (see scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# pytest exits 5 when it collects no tests; that is a failure here, as any non-zero code is.
# Two workers (pytest-xdist), a test file each at a time, so a module's fixtures are built once:
# much of the suite waits on servers, sweeps and kill -9s. Files go out in collection order, the
# longest first (tests/conftest.py LONGEST_FIRST). BB_TEST_WORKERS=0 runs in one process.
.venv/bin/python -m pytest -q -rs --durations=25 -n "${BB_TEST_WORKERS:-2}" --dist loadfile \
  --no-loadscope-reorder "$@"
