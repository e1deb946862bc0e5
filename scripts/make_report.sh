#!/usr/bin/env bash
# Regenerate docs/report/ (report.html, report.md, report.png) from the committed results:
# every results/cpu* folder, plus results/gpu/ when a lent GPU has produced one.
# The screenshot needs Debian's headless Chromium: apt-get install -y chromium
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=docs/report
inputs=(results/cpu*)
if [ -d results/gpu ]; then inputs+=(results/gpu); fi
"$PY" -m harness.report "${inputs[@]}" --out "$out/report.html" --latency-limit-ms 1000 "$@"
if command -v chromium >/dev/null; then
    # the top of the page: best configurations, cost vs latency, hardware comparison, contour
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --window-size=1400,3050 --virtual-time-budget=10000 \
        --screenshot="$PWD/$out/report.png" "file://$PWD/$out/report.html" 2>/dev/null
    echo "screenshot: $out/report.png"
else
    echo "no chromium on PATH: report.png not refreshed (apt-get install -y chromium)" >&2
fi
