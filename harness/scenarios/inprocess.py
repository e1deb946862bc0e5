"""In process, neuronperf-style: batch sizes x model copies x worker threads per copy."""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from typing import Any

from engines.measure import NEURONPERF_STATS
from harness import energy
from harness.costs import cost_per_1m_tokens
from harness.inprocess import InprocessConfig, InprocessResult, run_inprocess
from harness.results import TRITON_CONFIG_COLUMNS
from harness.runner import Measurement, Plan, Point, Progress, Scenario
from harness.setup import Setup, prepare_artifact
from harness.tables import columns, print_rows
from harness.workloads import workload_buckets

TABLE = columns(
    """
    batch_size        | batch         | 0
    n_models          | n_models      | 0
    workers_per_model | workers/model | 0
    latency_ms_p50    | fwd p50 ms    | 2
    latency_ms_p99    | fwd p99 ms    | 2
    p99_latency_ms    | e2e p99 ms    | 2
    throughput_avg    | inputs/s      | 1
    padding_ratio     | pad frac      | 2
    cost_per_1m_inf   | $/1M          | 3
    1B_cost           | $/1B          | 2
    floor_1B_cost     | floor $/1B    | 2
    efficiency        | efficiency    | 3
"""
)


def artifact_shapes(setup: Setup, batch_sizes: list[int]) -> dict[str, Any]:
    """The batch/sequence profile (and vision buckets) an exported artifact must hold."""
    stats, max_len = setup.workload.stats, setup.max_len
    batches = sorted(set(batch_sizes))
    lo = min(8, stats.min)
    shapes: dict[str, Any] = dict(
        batch_range=(batches[0], batches[len(batches) // 2], batches[-1]),
        seq_range=(lo, max(lo, min(int(stats.p50), max_len)), max_len),
    )
    if setup.spec.task == "vision-embedding" and setup.engine_cls.artifact_format == "onnx":
        budget = setup.engine_cfg.pixel_budget()
        shapes["image_buckets"] = workload_buckets(setup.workload.texts, budget, batch_sizes)
    return shapes


class InprocessScenario(Scenario):
    title = "in-process results (latency_ms_* = forward only; e2e = tokenize+forward+post)"
    adaptive = False  # a fixed grid: its points may run at once, on several nodes

    def __init__(self, args: argparse.Namespace, setup: Setup, console):
        self.args, self.setup = args, setup
        self.parity_metric: str | None = None
        if setup.engine_cls.needs_artifact(setup.engine_cfg):
            prepared = prepare_artifact(
                args, setup, console=console, **artifact_shapes(setup, args.batch_sizes)
            )
            self.setup = replace(setup, engine_cfg=prepared.engine_cfg)
            self.parity_metric = prepared.parity_metric
        self.engines: list = []  # loaded copies, reused across points (thread mode)
        # the flags' names for InprocessConfig's fields
        limits = dict(duration_s=args.duration, warmup_calls=args.warmup)
        limits.update(max_duration_s=args.max_duration, min_calls=args.min_calls)
        self.base = InprocessConfig(batch_size=1, processes=args.processes, **limits)
        self.meter = energy.DeviceMeter(self.setup.profile.device)

    def header(self) -> list[str]:
        return self.setup.describe()

    def estimate(self) -> int:
        a = self.args
        return len(a.n_models) * len(a.workers_per_model) * len(a.batch_sizes)

    def plan(self) -> Plan:
        a = self.args
        for n in a.n_models:
            for w in a.workers_per_model:
                for b in a.batch_sizes:
                    icfg = replace(self.base, batch_size=b, n_models=n, workers_per_model=w)
                    config = {
                        **self.setup.identity("inprocess"),
                        "inprocess": asdict(icfg),
                        "threads": a.threads,
                    }
                    label = f"batch {b} · n_models {n} · workers {w}"
                    yield Point(config, label, icfg)

    def measure(self, point: Point, progress: Progress) -> Measurement:
        icfg: InprocessConfig = point.params
        duration = self.args.duration

        def report(elapsed: float, calls: int) -> None:
            progress(f"{elapsed:5.1f}s/{duration:g}s · {calls} calls")

        res = run_inprocess(
            self.setup.engine_cfg,
            self.setup.workload,
            icfg,
            engines=None if icfg.processes else self.engines,
            progress=report,
            meter=self.meter,
        )
        notes = {
            "hit_deadline": res.hit_deadline,
            "engine_info": {k: v for k, v in res.engine_info.items() if k != "parity"},
        }
        row = self.row(res)
        said = [f"    {energy.describe([row])}"] if row.get("energy_source") else []
        return Measurement(row, notes, said)

    def row(self, res: InprocessResult) -> dict[str, Any]:
        spec, cfg, info = self.setup.spec, res.config, res.engine_info
        thr = res.throughput.avg
        vectors = None if spec.task == "classification" else (1, 1, 1)
        if res.num_vectors is not None:
            vectors = res.num_vectors
        row = {
            "total_requests": res.calls,
            "successful_requests": res.calls,
            "failed_requests": 0,
            "test_duration_sec": res.duration_s,
            **res.e2e.columns("{}_latency_ms"),
            "throughput_req_per_sec": thr,
            "throughput_peak": res.throughput.peak,
            "batch_size": cfg.batch_size,
            "vus": cfg.n_models * cfg.workers_per_model,
            "vendor": "local",
            "n_models": cfg.n_models,
            "workers_per_model": cfg.workers_per_model,
            "avg_num_vectors": vectors and vectors[1],
            "min_num_vectors": vectors and vectors[0],
            "max_num_vectors": vectors and vectors[2],
            "invalid_embeddings": res.invalid,
            "inputs_per_request": cfg.batch_size,
            **res.forward.columns("latency_ms_{}", NEURONPERF_STATS),
            "throughput_avg": thr,
            "mode": "inprocess",
            "protocol": "python" + ("-processes" if cfg.processes else "-threads"),
            "padding_ratio": res.padding_ratio,
            "accuracy": res.accuracy,
            "throughput_method": res.throughput.method,
            "cpu_percent": res.cpu_percent,
            "peak_rss_mb": res.peak_rss_mb,
            "peak_gpu_mem_mb": res.peak_gpu_mem_mb,
        }
        row.update(self.setup.context(info, thr, self.parity_metric))
        # tokens/s from the calls' own useful tokens (the workload mean is only an estimate)
        row["cost_per_1m_tokens"] = cost_per_1m_tokens(
            self.setup.profile.price_per_hour, res.tokens_per_sec
        )
        row.update(res.server)
        row.update({k: info[k] for k in TRITON_CONFIG_COLUMNS if k in info})
        if res.avg_pixels is not None:  # what the timed calls saw, not the workload's mean
            row.update(avg_pixels=res.avg_pixels, avg_visual_tokens=res.avg_visual_tokens)
        row.update(energy.energy_columns(res.energy, res.inputs))
        return row

    def close(self) -> None:
        for e in self.engines:
            e.close()
        self.engines.clear()
        self.meter.close()

    def summarize(self, console, rows, store) -> None:
        print_rows(console, self.title, TABLE, rows)
        profile = self.setup.profile
        weights = rows[0].get("weights") if rows else "?"
        console.print(
            f"weights={weights} · results: {store.csv} and {store.parquet} · cost = "
            f"${profile.price_per_hour}/hr x 1e9 / (3600 x inputs/s); floor = FLOPs/input at peak",
            highlight=False,
        )
        console.print(energy.describe(rows), highlight=False)
        console.print(
            "next: compare exports (--engine onnx --variant optimized --precision int8, "
            "--engine compile, --engine aoti, --engine triton), model copies (--n-models 1,2), "
            "HTTP with python -m harness.sweep, or merge runs with python -m harness.report",
            highlight=False,
        )
        padded = max((r.get("padding_ratio") or 0.0 for r in rows), default=0.0)
        layout = getattr(self.setup.engine_cfg.options, "token_layout", None)
        if layout == "padded" and padded >= 0.1:
            console.print(
                f"padding took up to {padded:.0%} of the token slots computed: "
                "--token-layout packed computes none of it (BERT / DistilBERT)",
                highlight=False,
            )
        if weights == "random":
            console.print(
                "[yellow]weights=random: latency/throughput are valid for the "
                "architecture; predictions are meaningless[/]"
            )
