#!/usr/bin/env bash
# The engine table of results/cpu-engines/README.md: full-size DistilBERT and gte-ModernBERT,
# batch 32, random weights, seed-000 token distributions, every CPU engine. Rows go to
# results/cpu-engines/.
# Takes about 30 minutes on 2 cores (exports included; artifacts are cached in artifacts/).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-results/cpu-engines}
common=(--inputs-per-request 32 --duration 5 --min-calls 3 --warmup 1 --output-dir "$OUT")
for model in "classification distilbert-sentiment" "embedding gte-modernbert"; do
  set -- $model
  task=$1 name=$2
  $PY -m harness.run --task "$task" --model "$name" --engine eager "${common[@]}"
  $PY -m harness.run --task "$task" --model "$name" --engine compile "${common[@]}"
  $PY -m harness.run --task "$task" --model "$name" --engine aoti "${common[@]}"
  $PY -m harness.run --task "$task" --model "$name" --engine onnx "${common[@]}"
  $PY -m harness.run --task "$task" --model "$name" --engine onnx --variant optimized "${common[@]}"
  $PY -m harness.run --task "$task" --model "$name" --engine onnx --variant optimized --precision int8 "${common[@]}"
done
