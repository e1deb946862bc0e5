#!/usr/bin/env bash
# The measurements of results/cpu-triton/README.md, on full-size DistilBERT (random weights), this
# CPU, loopback only:
# a Model Analyzer-style config sweep through the bundled tritonserver (python-backend encoder
# running the parity-checked ONNX model), then the same ONNX model behind our own server at the
# same concurrencies, then perf_analyzer against Triton's best-looking setup for a cross-check.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/cpu-triton}
common=(--task classification --model distilbert-sentiment --weights random --num-samples 256)
$PY -m harness.sweep --engine triton "${common[@]}" \
  --search instances,max_batch,delay --instances 1,2 --max-batch-sizes 1,8 \
  --queue-delays-us off,2000 --concurrency 1,8 \
  --iterations 100000 --max-duration 20 --output-dir "$OUT/triton-sweep"
$PY -m harness.sweep --engine onnx "${common[@]}" \
  --max-batch-sizes 1,8 --inputs-per-request 1 --vus-start 1 --vus-max 8 --repeats 1 \
  --improvement -1 --iterations 100000 --max-duration 20 --output-dir "$OUT/ours-onnx"
$PY -m harness.run --engine triton --load perf_analyzer "${common[@]}" \
  --inputs-per-request 1 --concurrency 1,8 --duration 10 --output-dir "$OUT/perf-analyzer"
