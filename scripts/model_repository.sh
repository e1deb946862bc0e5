#!/usr/bin/env bash
# Rebuild the example Triton repositories in model_repository/: tiny DistilBERT, random weights,
# one repository per encoder backend. This brings back what git ignores (model.onnx, model.pt,
# tokenizer files, manifests) and rewrites the checked-in config.pbtxt, model.py and README.md
# files, which stay equal unless the exporter changed (tests/test_model_repository.py checks).
#   bash scripts/model_repository.sh         # into model_repository/ of this checkout
#   bash scripts/model_repository.sh DIR     # into DIR/model_repository/ (the test compares that)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$root/.venv/bin/python}
dest=$(cd "${1:-$root}" && pwd)
model=distilbert-sentiment-tiny
# the exporter never writes into a folder that holds other files (the checked-in examples have
# no manifest): each repository is exported under a fresh folder, then copied over the example
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
# --device cpu: the same files on any machine (a GPU host would write KIND_GPU instances)
for backend in python onnxruntime pytorch; do
  "$PY" -m harness.export --model "$model" --weights random --device cpu --format triton \
    --backend "$backend" --out "model_repository/$model-$backend"
done
# TensorRT builds a plan only on the GPU it will run on, so the exporter refuses the tensorrt
# backend here. Write everything it writes around the plan: the same export with the encoder
# step left out. On a GPU host the full repository (with 1/model.plan) comes from:
#   python -m harness.export --model distilbert-sentiment-tiny --weights random --format triton \
#     --backend tensorrt --device cuda --out model_repository/distilbert-sentiment-tiny-tensorrt
"$PY" - "$model" <<'EOF'
import sys

from exporters.api import export
from exporters.base import ExportConfig
from exporters.triton import TritonExporter, _Encoder


class WithoutPlan(TritonExporter):
    def _encoder(self, cfg, opts, model, dest):
        return _Encoder(parity={"passed": None, "skipped": "no plan: build it on the target GPU"})


name = sys.argv[1]
export(
    ExportConfig(
        model=name,
        format="triton",
        out=f"model_repository/{name}-tensorrt",
        variant="tensorrt",
        device="cuda",
        hw="gpu",
        weights="random",
    ),
    WithoutPlan(),
)
print(f"artifact: model_repository/{name}-tensorrt  (configs only: no model.plan without a GPU)")
EOF
for repo in "$tmp"/model_repository/*; do
  mkdir -p "$dest/model_repository/$(basename "$repo")"
  cp -a "$repo/." "$dest/model_repository/$(basename "$repo")/"
done
