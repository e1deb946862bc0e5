#!/usr/bin/env bash
# The prepared accelerator check: every GPU path once, within 8 minutes, into one folder.
#   bash scripts/device_check.sh OUTDIR [--smoke] [--price-per-hour X]
# Uses $PYTHON, else this checkout's .venv, else the host's python3 (a bare GPU host's own,
# with CUDA torch); it installs nothing from the network. See docs/device-check.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
exec "$PYTHON" "$root/scripts/device_check.py" "$@"
