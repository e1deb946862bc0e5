#!/usr/bin/env bash
# Regenerate docs/plan.png: the deployment plan view of the report (harness.plan --report) over
# the committed results (every results/cpu*, plus results/gpu/ when a lent GPU produced one),
# with the published reference rows. The HTML itself (plotly inlined, ~6 MB) is not kept.
# The screenshot needs Debian's headless Chromium: apt-get install -y chromium
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
inputs=(results/cpu*)
if [ -d results/gpu ]; then inputs+=(results/gpu); fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$PY" -m harness.plan "${inputs[@]}" --rate 1e9/day --peak 3 --p99-ms 2000 --references \
    --report "$out/plan.html" "$@" > "$out/plan.txt"
if command -v chromium >/dev/null; then
    chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
        --disable-component-update --no-first-run --disable-sync --hide-scrollbars \
        --window-size=1400,2250 --virtual-time-budget=10000 \
        --screenshot="$PWD/docs/plan.png" "file://$out/plan.html" 2>/dev/null
    echo "screenshot: docs/plan.png"
else
    echo "no chromium on PATH: docs/plan.png not refreshed (apt-get install -y chromium)" >&2
fi
