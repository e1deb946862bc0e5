#!/usr/bin/env bash
# Which of Infinity's own flags make its answers right: each configuration below started alone
# (scripts/bench_peers.sh QUALITY_ONLY=1), asked for the run's texts, compared with
# sentence-transformers fp32; no load. Quality is deterministic here, so one pass is enough.
#   OUT=/tmp/infinity-flags bash scripts/infinity_flags.sh      # -> $OUT/flags.md
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/infinity-flags}
mkdir -p "$OUT"
rm -f "$OUT/runs.tsv.tmp"
# label | bench_peers.sh server | extra Infinity flags
RUNS=(
  "optimum, no flags (int8 file, pooling auto)|infinity-optimum-int8-noflags|"
  "optimum --pooling-method mean (int8 file)|infinity-optimum-int8-noflags|--pooling-method mean"
  "optimum --pooling-method cls (int8 file)|infinity-optimum-int8-noflags|--pooling-method cls"
  "optimum --onnx-do-not-prefer-quantized (fp32 file)|infinity-optimum-int8-noflags|--onnx-do-not-prefer-quantized"
  "optimum --onnx-do-not-prefer-quantized --pooling-method mean (fp32 file)|infinity-optimum-fp32|"
  "  + --onnx-disable-optimize|infinity-optimum-fp32|--onnx-disable-optimize"
  "  + --model-warmup|infinity-optimum-fp32|warmup"
  "  + --dtype float32|infinity-optimum-fp32|--dtype float32"
  "  + --no-bettertransformer|infinity-optimum-fp32|--no-bettertransformer"
  "optimum model_O2.onnx --pooling-method mean|infinity-optimum-fp32-o2|"
  "optimum model_O3.onnx --pooling-method mean|infinity-optimum-fp32-o3|"
  "optimum int8 --pooling-method mean + --onnx-disable-optimize|infinity-optimum-int8|--onnx-disable-optimize"
  "optimum int8 per-channel --pooling-method mean|infinity-optimum-int8-pc|"
  "torch, no flags|infinity-torch|"
  "torch --no-bettertransformer|infinity-torch|--no-bettertransformer"
  "torch --pooling-method mean|infinity-torch|--pooling-method mean"
)
i=0
for run in "${RUNS[@]}"; do
  IFS='|' read -r label server flags <<<"$run"
  i=$((i + 1))
  echo "== $i $label: $server $flags"
  warmup=--no-model-warmup
  [ "$flags" = warmup ] && { warmup=--model-warmup; flags=""; }
  INFINITY_WARMUP=$warmup PEERS=$server CONFIGS=none QUALITY_ONLY=1 REPEATS=1 PEER_FLAGS="$flags" OUT="$OUT/$i" \
    REFERENCE_CACHE="$OUT/reference.npz" bash scripts/bench_peers.sh >"$OUT/$i.log" 2>&1 || true
  [ "$warmup" = --model-warmup ] && flags=--model-warmup
  printf '%s\t%s\t%s\t%s\n' "$i" "$label" "$server" "$flags" >>"$OUT/runs.tsv.tmp"
done
mv "$OUT/runs.tsv.tmp" "$OUT/runs.tsv"
.venv/bin/python - "$OUT" <<'PY' | tee "$OUT/flags.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| # | configuration | server (bench_peers.sh) + flags | file served | n | min cosine | mean cosine | passed |")
print("|---|---|---|---|---|---|---|---|")
for line in (out / "runs.tsv").read_text().splitlines():
    i, label, server, flags = line.split("\t")
    qs = list((out / i).glob("*-rep1/quality-*.json"))
    log = out / i / f"server-{server}.log"
    served = "-"
    if log.exists():
        words = log.read_text().split()
        served = next((words[k - 1] for k in range(1, len(words)) if words[k] == "as" and words[k + 1 : k + 3] == ["the", "model"]), "-")
    if not qs:
        print(f"| {i} | {label} | `{server} {flags}` | {served} | - | - | - | did not start |")
        continue
    c = json.loads(qs[0].read_text())["combined"]
    fmt = lambda v: "-" if v is None else f"{v:.5f}"
    print(f"| {i} | {label} | `{server} {flags}`".rstrip() + f" | {served} | {c['n']} | {fmt(c['min_cosine'])} | {fmt(c['mean_cosine'])} | {'yes' if c['passed'] else 'FAILING QUALITY'} |")
PY
