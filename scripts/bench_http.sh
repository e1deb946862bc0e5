#!/usr/bin/env bash
# The measurements of results/cpu-http/README.md, on full-size DistilBERT (random weights), this CPU:
# in-process vs HTTP at the same batch size, FIFO vs length-aware padding, and the load
# generator's ceiling (measured at the start of each sweep, stored as loadgen_ceiling_rps).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-results/cpu-http}
$PY -m harness.run --inputs-per-request 8,32 --duration 20 --min-calls 5 --output-dir "$OUT/inprocess"
http=(--max-batch-sizes 8,32 --inputs-per-request 8 --vus-start 1 --vus-max 4 --repeats 1
      --iterations 100000 --max-duration 30)
$PY -m harness.sweep "${http[@]}" --output-dir "$OUT/http"
$PY -m harness.sweep "${http[@]}" --no-length-aware --no-ceiling --output-dir "$OUT/http-fifo"
# a deep queue (32 single-input clients, server batch 8): where length-aware grouping matters
deep=(--max-batch-sizes 8 --inputs-per-request 1 --vus-start 32 --vus-max 32 --repeats 1
      --iterations 100000 --max-duration 30 --no-ceiling)
$PY -m harness.sweep "${deep[@]}" --output-dir "$OUT/deep-length-aware"
$PY -m harness.sweep "${deep[@]}" --no-length-aware --output-dir "$OUT/deep-fifo"
