"""Where a forward's CPU time goes, for the efficiency figure (useful FLOP/s / matmul peak).

Takes harness.run's flags (model, weights, engine eager|compile, precision, workload, threads)
and one batch size; runs the workload's batches through the engine under torch.profiler and
prints the self CPU time per op and per kind (matmul, attention, normalisation, activation,
the rest), the useful FLOP/s against the matmul peak measured in the same run, and the FLOP/s
the matmuls alone reach.

    .venv/bin/python scripts/profile_forward.py --model distilbert-sentiment --weights random \\
        --engine eager --batch 8 --calls 20
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KINDS = {
    "matmul": ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "mkldnn"),
    "attention": ("scaled_dot_product", "_flash_attention", "aten::_softmax", "aten::softmax"),
    "normalisation": ("layer_norm", "aten::native_layer_norm"),
    "activation": ("aten::gelu", "aten::relu", "aten::tanh", "aten::silu"),
    "copies and shapes": ("aten::copy_", "aten::contiguous", "aten::clone", "aten::cat"),
}


def kind(name: str) -> str:
    for k, keys in KINDS.items():
        if any(key in name for key in keys):
            return k
    return "other"


def main() -> int:
    import torch

    from core.config import config_from
    from engines import create_engine
    from harness import run
    from harness.config import target_from
    from harness.target import load_setup
    from workloads import WorkloadSpec

    argv = sys.argv[1:]
    batch, calls = 8, 20
    for flag in ("--batch", "--calls"):
        if flag in argv:
            i = argv.index(flag)
            value = int(argv[i + 1])
            del argv[i : i + 2]
            batch, calls = (value, calls) if flag == "--batch" else (batch, value)
    ns = run.build_parser().parse_args([*argv, "--inputs-per-request", str(batch)])
    setup = load_setup(target_from(ns), config_from(WorkloadSpec, ns))
    engine = create_engine(setup.engine_cfg)
    engine.load()
    wl = setup.workload
    batches = [wl.batch(i, batch)[0] for i in range(calls)]
    for texts in batches[:3]:  # warm-up
        engine.infer(engine.preprocess(texts).inputs)
    prepared = [engine.preprocess(t) for t in batches]
    tokens = sum(int(b.inputs["attention_mask"].sum()) for b in prepared)
    slots = sum(int(b.inputs["attention_mask"].size) for b in prepared)
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for b in prepared:
            engine.infer(b.inputs)
    wall = time.perf_counter() - t0
    # again without the profiler, for the FLOP/s (the profiler's own overhead is excluded)
    t0 = time.perf_counter()
    for b in prepared:
        engine.infer(b.inputs)
    clean = time.perf_counter() - t0

    by_kind: dict[str, float] = defaultdict(float)
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops) or 1.0
    for e in ops:
        by_kind[kind(e.key)] += e.self_cpu_time_total
    print(f"{setup.spec.name} · {setup.engine_cfg.engine} {setup.engine_cfg.precision} · ", end="")
    print(f"batch {batch} x {calls} calls · {tokens} tokens in {slots} slots")
    print("top ops by self CPU time (all threads):")
    for e in ops[:12]:
        share = e.self_cpu_time_total / total
        print(f"  {share:6.1%}  {e.count:6d} calls  {e.key}")
    print("by kind:")
    for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {v / total:6.1%}  {k}")
    useful = (setup.flops or 0) * batch * calls
    rate = useful / clean
    peak = setup.peak or float("nan")
    print(f"forward wall {clean:.2f} s (profiled {wall:.2f} s)")
    print(
        f"useful FLOP/s {rate / 1e9:.1f} G · matmul peak {peak / 1e9:.1f} G · ratio {rate / peak:.2f}"
    )
    mm = by_kind["matmul"] / total
    if mm > 0:
        print(f"matmuls alone: {rate / mm / 1e9:.1f} GFLOP/s if they did all the useful FLOPs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
