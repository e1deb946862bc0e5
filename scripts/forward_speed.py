"""Forward-pass cost of ONNX Runtime and OpenVINO artifacts, in process, arms alternating.

    python scripts/forward_speed.py --model all-minilm-l6 --model-path DIR \
        ort:fp32:artifacts/.../onnx-fp32-optimized-cpu/model.onnx \
        ov:int8:artifacts/.../openvino-int8-cpu/model.xml  ovbf16:bf16:.../openvino-fp32-cpu/model.xml

Each arm is KIND:NAME:FILE (KIND ort, ov or ovbf16: OpenVINO with bf16 execution). One batch of
8 synthetic texts of ~144 tokens; per arm, the CPU ms per input at 1 thread (process_time, which
other users of a shared host disturb least) and inputs/s at 2 threads, with the 1-minute load.
Prints CSV (results/cpu-openvino/forward_speed_round*.csv).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from engines.models import get_spec, load_tokenizer
from engines.pipeline import Pipeline
from engines.textgen import texts_with_token_counts


def runner(kind: str, path: str, threads: int, feeds: dict) -> Callable[[], object]:
    if kind == "ort":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        return lambda: s.run(None, feeds)
    import openvino as ov

    props = {
        "INFERENCE_PRECISION_HINT": "bf16" if kind == "ovbf16" else "f32",
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
    }
    req = ov.Core().compile_model(path, "CPU", props).create_infer_request()
    return lambda: req.infer(feeds)


def timed(run: Callable[[], object], secs: float) -> tuple[int, float, float]:
    run()
    n, c, t = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - t < secs:
        run()
        n += 1
    return n, time.process_time() - c, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-minilm-l6")
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("arms", nargs="+", help="KIND:NAME:FILE")
    a = ap.parse_args()
    spec = get_spec(a.model)
    tok = load_tokenizer(spec, a.model_path).tokenizer
    counts = np.clip(np.rint(np.random.default_rng(0).normal(144, 14, 8)), 8, 256).astype(int)
    feeds = Pipeline(spec, tok).preprocess(texts_with_token_counts(tok, list(counts), seed=1))
    arms = [arm.split(":", 2) for arm in a.arms]
    one = {name: runner(kind, path, 1, feeds.inputs) for kind, name, path in arms}
    two = {name: runner(kind, path, 2, feeds.inputs) for kind, name, path in arms}
    print("round,arm,cpu_ms_per_input_1thr,inputs_per_s_2thr_b8,load1")
    for rnd in range(a.rounds):
        names = list(one) if rnd % 2 == 0 else list(one)[::-1]
        for name in names:
            n, cpu, _ = timed(one[name], a.seconds)
            n2, _, wall = timed(two[name], a.seconds)
            load = open("/proc/loadavg").read().split()[0]
            print(f"{rnd},{name},{cpu / (n * 8) * 1000:.2f},{n2 * 8 / wall:.1f},{load}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
