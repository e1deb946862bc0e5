#!/usr/bin/env bash
# README command 2 (and CI): install with test/dev extras, then lint and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,dev
exec bash scripts/check.sh "$@"
