#!/usr/bin/env bash
# Create .venv and install billionbench with the given extras (default: none).
#   bash scripts/setup.sh            # base install
#   bash scripts/setup.sh test,dev   # + pytest, ruff
# torch is installed first so nothing pulls an unpinned (multi-GB CUDA) build:
#   - a torch that is already importable (e.g. your CUDA build) is kept as is;
#   - otherwise TORCH_SPEC is installed (default torch==2.13.0, the CPU wheel on CPU hosts
#     that ship it; elsewhere e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu").
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  # shellcheck disable=SC2086
  pip install --quiet ${TORCH_SPEC:-torch==2.13.0}
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
pip install --quiet -e "$spec"
# The test and triton extras also get a real tritonserver (python backend, CPU) and
# perf_analyzer. nvidia-pytriton pins numpy<2, which would break pandas, so it goes in without
# its dependencies; `harness.tools prepare` then gives its python stub NumPy 1.x on the side.
case ",$extras," in
  *,test,*|*,triton,*)
    if [ "$(uname -m)" = "x86_64" ] && [ "${BILLIONBENCH_NO_TRITONSERVER:-0}" != "1" ]; then
      pip install --quiet --no-deps "nvidia-pytriton==0.7.0"
      python -m harness.tools prepare tritonserver
      python -m harness.tools prepare perf_analyzer || echo "perf_analyzer not prepared (optional)"
    fi
    ;;
esac
