"""Offline: the workload as one batch job, the way a user runs a billion inputs.

`harness.run --scenario offline`: the workload's texts go through `serving.bulk` as a stream of
windows (the workload, cycled): tokenized on their own thread while the engine runs the window
before, sorted by length, packed into batches under a count cap (each `--inputs-per-request`
value, one row each) and a padded-token budget (`--max-batch-tokens`) at the shape the engine
computes, and handed back in input order. A point runs whole windows until every input went
through at least once and `--duration` seconds have passed; its inputs/s are end to end (text
in, outputs in order), its latencies per batch, and its outputs on a sample of the workload are
compared with eager fp32 of the same model (the `quality_*` columns).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.console_tables import columns, confidence_lines, print_rows
from core import energy, stats
from core.config import arg
from core.costs import cost_per_1m_tokens
from core.errors import ConfigError
from core.measure import NEURONPERF_STATS, Latency, Throughput
from engines.registry import create_engine
from exporters.parity import eager_reference
from harness.quality import Gate, Quality, Reference, compare, sample_indices, texts_sha
from harness.runner import Measurement, Plan, Point, Progress, Scenario, repeated
from harness.scenarios.inprocess_loop import Sampler, gpu_peak_mb
from harness.target import Setup, with_artifact
from serving.bulk import BulkRunner, JobLimits, JobStats, Window, WindowResult

#: inputs of the workload whose job outputs are compared with eager fp32 (0: none)
QUALITY_SAMPLE = 64


@dataclass(frozen=True)
class OfflineConfig:
    """The offline job's own flags; the count caps, duration, warm-up and repeats are the
    in-process grid's (`--inputs-per-request`, `--duration`, `--warmup`, `--repeats`)."""

    max_batch_tokens: int = arg(
        16384,
        help="--scenario offline: padded tokens per forward pass (inputs x the longest, at the "
        "shape the engine computes)",
    )
    max_batch_padding: float = arg(
        0.05,
        help="--scenario offline: the padding fraction a batch may carry beyond what the "
        "engine's fixed shapes add; a batch ends early rather than pad more (1: fill to the caps)",
    )
    sort_window: int = arg(
        4096,
        help="--scenario offline: inputs tokenized and sorted by length together (the workload's "
        "size when it is smaller)",
    )
    quality_sample: int = arg(
        QUALITY_SAMPLE,
        help="--scenario offline: workload inputs whose outputs are compared with eager fp32 of "
        "the same model (0: none)",
    )

    def __post_init__(self) -> None:
        for name in ("max_batch_tokens", "sort_window"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be >= 1; got {getattr(self, name)}")
        if not 0 <= self.max_batch_padding <= 1:
            raise ConfigError(
                f"--max-batch-padding must be in [0, 1]; got {self.max_batch_padding}"
            )
        if self.quality_sample < 0:
            raise ConfigError(f"--quality-sample must be >= 0; got {self.quality_sample}")


@dataclass(frozen=True)
class OfflinePoint:
    """One row: the count cap and the budget, and how long it runs."""

    max_batch_size: int
    max_batch_tokens: int
    max_batch_padding: float
    sort_window: int
    duration: float
    warmup: int


TABLE = columns(
    """
    batch_size        | max batch     | 0
    throughput_avg    | inputs/s      | 1
    throughput_ci_low | inputs/s low  | 1
    padding_ratio     | pad frac      | 3
    latency_ms_p50    | fwd p50 ms    | 2
    p50_latency_ms    | batch p50 ms  | 2
    p99_latency_ms    | batch p99 ms  | 2
    quality_min_cosine | min cos      | 5
    quality_label_agreement | labels  | 3
    cost_per_1m_inf   | $/1M          | 3
    1B_cost           | $/1B          | 2
    floor_1B_cost     | floor $/1B    | 2
    efficiency        | efficiency    | 3
"""
)


def cycled_windows(texts: list[str], size: int) -> Iterator[Window]:
    """Windows of `size` consecutive inputs over the workload, cycled without end (a window's
    `start` counts on across cycles; input i of the job is texts[i % len(texts)])."""
    n = len(texts)
    for k in itertools.count():
        start = k * size
        yield Window(start, [texts[(start + j) % n] for j in range(size)])


def job_throughput(job: JobStats) -> Throughput:
    """End-to-end inputs/s (text in, outputs in order), with the 95 % interval of the batch
    means over the job's inner 1-second windows of completed inputs."""
    elapsed = job.elapsed_s
    avg = job.inputs / elapsed if elapsed > 0 else 0.0
    ends = np.asarray([b.done for b in job.batches], dtype=np.int64)
    counts = np.asarray([b.inputs for b in job.batches], dtype=np.int64)
    buckets = np.bincount((ends - job.started) // 1_000_000_000, weights=counts)
    if buckets.size < 4:
        return Throughput(avg, avg, "job", elapsed)
    inner = buckets[1:-1]
    ci = stats.batch_means(inner)
    return Throughput(avg, float(inner.max()), "job", elapsed, ci.low, ci.high, int(inner.size))


def check_grid(grid) -> None:
    """The in-process grid's flags that the offline job does not take, refused in one line."""
    if grid.n_models != (1,) or grid.workers_per_model != (1,) or grid.processes:
        raise ConfigError(
            "--scenario offline runs one model copy fed by its own tokenizer thread; drop "
            "--n-models, --workers-per-model and --processes"
        )


class OfflineScenario(Scenario):
    title = "offline job (inputs/s end to end: text in, outputs in order; latencies per batch)"
    adaptive = False

    def __init__(self, config: OfflineConfig, grid, setup: Setup, console):
        if setup.spec.task not in ("classification", "embedding") or setup.spec.multi_vector:
            raise ConfigError(
                "--scenario offline runs text classifiers and single-vector embedders; "
                f"{setup.spec.name} is a {setup.spec.task} model"
            )
        check_grid(grid)
        self.config, self.grid = config, grid
        self.setup, self.parity_metric, self.parity_margin = with_artifact(
            setup, console, grid.inputs_per_request
        )
        self.engine: Any = None
        self.reference: Reference | None = None
        self.meter = energy.DeviceMeter(self.setup.profile.device)

    def header(self) -> list[str]:
        return self.setup.describe()

    def estimate(self) -> int:
        return len(self.grid.inputs_per_request) * self.grid.repeats

    def plan(self) -> Plan:
        c, g = self.config, self.grid
        for b in g.inputs_per_request:
            point = OfflinePoint(
                b, c.max_batch_tokens, c.max_batch_padding, c.sort_window, g.duration, g.warmup
            )
            config = {
                **self.setup.identity("offline"),
                "offline": asdict(point),
                "threads": self.setup.engine_cfg.threads,
            }
            label = f"offline · max batch {b} · {c.max_batch_tokens} tokens"
            yield from repeated(config, label, point, g.repeats)

    def _loaded(self):
        if self.engine is None:
            self.engine = create_engine(self.setup.engine_cfg)
            self.engine.load()
        return self.engine

    def measure(self, point: Point, progress: Progress) -> Measurement:
        p: OfflinePoint = point.params
        engine, workload = self._loaded(), self.setup.workload
        for i in range(p.warmup):
            engine.predict(workload.batch(i, p.max_batch_size)[0])
        texts = workload.texts
        n, size = len(texts), min(p.sort_window, len(texts))
        need = math.ceil(n / size)  # windows until every input went through once
        first_pass: list[WindowResult] = []
        t0 = time.perf_counter()

        def on_window(result: WindowResult) -> bool:
            if len(first_pass) < need:
                first_pass.append(result)
            elapsed = time.perf_counter() - t0
            progress(f"{elapsed:5.1f}s/{p.duration:g}s · {result.start + len(result)} inputs")
            return len(first_pass) >= need and elapsed >= p.duration

        limits = JobLimits(
            max_batch_size=p.max_batch_size,
            max_batch_tokens=p.max_batch_tokens,
            max_batch_padding=p.max_batch_padding,
        )
        sampler = Sampler()
        sampler.start()
        meter = energy.start_meter(self.meter)
        try:
            job = BulkRunner(engine, limits).run(cycled_windows(texts, size), on_window)
        finally:
            cpu = sampler.stop()
            reading = energy.stop_meter(meter)
        outputs = _in_workload_order(first_pass, n)
        row = self.row(job, outputs, p, cpu, sampler.peak_rss / 2**20)
        row.update(energy.energy_columns(reading, job.inputs))
        row["repeat"] = point.config.get("repeat", 0)
        notes = {
            "engine_info": {k: v for k, v in engine.info.items() if k != "parity"},
            "engine_waited_s": job.engine_wait_ns / 1e9,
            "tokenize_s": job.tokenize_ns / 1e9,
            "windows": len(job.window_done),
            "window_inputs": size,
        }
        return Measurement(row, notes)

    def row(self, job: JobStats, outputs, p: OfflinePoint, cpu: float, rss_mb: float) -> dict:
        spec, info = self.setup.spec, self.engine.info
        thr = job_throughput(job)
        batches = job.batches
        per_batch = Latency.from_ns([b.done - b.ready for b in batches])
        forward = Latency.from_ns([b.forward_ns for b in batches])
        tokens = sum(b.tokens for b in batches)
        invalid = sum(b.invalid for b in batches)
        single = None if spec.task == "classification" else 1
        row = {
            "total_requests": len(batches),
            "successful_requests": len(batches),
            "failed_requests": 0,
            "test_duration_sec": job.elapsed_s,
            **per_batch.columns("{}_latency_ms"),
            "throughput_req_per_sec": thr.avg,
            "throughput_peak": thr.peak,
            "batch_size": p.max_batch_size,  # offline: the count cap of the job's batches
            "max_batch_size": p.max_batch_size,
            "vus": 1,
            "vendor": "local",
            "n_models": 1,
            "workers_per_model": 1,
            "avg_num_vectors": single,
            "min_num_vectors": single,
            "max_num_vectors": single,
            "invalid_embeddings": invalid,
            **forward.columns("latency_ms_{}", NEURONPERF_STATS),
            "throughput_avg": thr.avg,
            "mode": "offline",
            "protocol": "python-job",
            "padding_ratio": job.padding_ratio,
            "accuracy": self._accuracy(outputs),
            "throughput_method": thr.method,
            **thr.interval_columns(),
            **per_batch.bound_columns(),
            "cpu_percent": cpu,
            "peak_rss_mb": rss_mb,
            "peak_gpu_mem_mb": gpu_peak_mb(),
        }
        row.update(self.setup.context(info, thr.avg, self.parity_metric))
        row["parity_margin"] = self.parity_margin
        per_input = tokens / max(job.inputs, 1)
        row["cost_per_1m_tokens"] = cost_per_1m_tokens(
            self.setup.profile.price_per_hour, thr.avg * per_input
        )
        quality = self._quality(outputs)
        if quality is not None:
            row.update(quality.columns())
        return row

    def _accuracy(self, outputs: tuple[np.ndarray, list | None]) -> float | None:
        labels, (_, got) = self.setup.workload.labels, outputs
        if labels is None or got is None:
            return None
        names = self.setup.spec.labels
        pairs = [
            (names[w] if isinstance(w, (int, np.integer)) and 0 <= w < len(names) else str(w), g)
            for w, g in zip(labels, got, strict=True)
            if w is not None
        ]
        return sum(w == g for w, g in pairs) / len(pairs) if pairs else None

    def _quality(self, outputs: tuple[np.ndarray, list | None]) -> Quality | None:
        """The job's outputs on a sample of the workload against eager fp32 of the model."""
        k = self.config.quality_sample
        if k == 0 or not self.setup.engine_cls.computes_model:
            return None
        texts = self.setup.workload.texts
        picked = sample_indices(len(texts), k)
        if self.reference is None:
            self.reference = eager_fp32(self.setup, [texts[i] for i in picked])
        values, labels = outputs
        got = [labels[i] for i in picked] if labels is not None else values[picked]
        return compare(self.reference, got, Gate())

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        self.meter.close()

    def summarize(self, console, rows, out: Path) -> None:
        print_rows(console, self.title, TABLE, rows)
        profile = self.setup.profile
        console.print(
            f"offline: inputs sorted by length into batches of at most `max batch` inputs, "
            f"{self.config.max_batch_tokens} padded tokens and {self.config.max_batch_padding:.0%} "
            "padding; outputs in input order; quality vs "
            f"eager fp32 on {self.config.quality_sample} inputs · cost = "
            f"${profile.price_per_hour}/hr x 1e9 / (3600 x inputs/s)",
            highlight=False,
        )
        console.print(energy.describe(rows), highlight=False)
        for line in confidence_lines(rows):
            console.print(line, highlight=False)
        if rows and rows[0].get("weights") == "random":
            console.print(
                "[yellow]weights=random: latency/throughput are valid for the "
                "architecture; predictions are meaningless[/]"
            )


def _in_workload_order(results: list[WindowResult], n: int) -> tuple[np.ndarray, list[str] | None]:
    """The first pass's outputs, one per workload input, in the workload's order."""
    values = np.concatenate([r.values for r in results])[:n]
    if results[0].labels is None:
        return values, None
    labels = [lab for r in results for lab in r.labels or []][:n]
    return values, labels


def eager_fp32(setup: Setup, texts: list[str]) -> Reference:
    """Eager fp32 of the run's model on `texts`: the offline rows' quality reference."""
    cfg = eager_reference(setup.engine_cfg)
    with create_engine(cfg) as ref:
        parts = [ref.predict(texts[i : i + 8]) for i in range(0, len(texts), 8)]
    source = f"billionbench eager fp32 {setup.spec.name} ({ref.info.get('weights')} weights)"
    if setup.spec.task == "classification":
        labels = tuple(lab for p in parts for lab in p.labels or [])
        return Reference("classification", source, texts_sha(texts), labels=labels)
    vectors = np.concatenate([p.values for p in parts]).astype(np.float64)
    return Reference(setup.spec.task, source, texts_sha(texts), vectors=vectors)
