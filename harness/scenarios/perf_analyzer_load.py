"""perf_analyzer as a load generator for Triton (`harness.run --load perf_analyzer`).

perf_analyzer never looks at outputs (it posted good numbers here for a model answering with
empty tensors), so `validate_sample` checks a sample of real responses first and the harness
refuses the numbers when any is wrong. The binary and its runs: `core.processes.perf_analyzer`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from analysis.console_tables import columns, print_rows
from core.config import arg, int_list
from core.errors import BillionbenchError, ConfigError, EngineError
from core.processes.perf_analyzer import STABILITY_PCT, find_binary, run, version
from engines.registry import create_engine
from harness.results import TRITON_CONFIG_COLUMNS
from harness.runner import Measurement, Plan, Point, Progress, Scenario, repeated
from harness.target import Setup, prepare_artifact


@dataclass(frozen=True)
class PerfAnalyzerConfig:
    """perf_analyzer's grid: inputs per request x concurrency, each measured for `duration`."""

    inputs_per_request: tuple[int, ...] = arg(
        (1, 8, 32), parse=int_list, help="inputs per request (perf_analyzer's -b)"
    )
    concurrency: tuple[int, ...] = arg(
        (1, 2, 4, 8), parse=int_list, help="perf_analyzer concurrencies"
    )
    duration: float = arg(5.0, help="perf_analyzer's measurement interval, in seconds")
    repeats: int = arg(1, help="runs of each configuration, one row each (the in-process flag)")


def to_row(pa: dict[str, float], batch: int) -> dict:
    """One CSV row -> our result columns (ms; throughput in inputs/s)."""

    def ms(key: str) -> float | None:
        return pa[key] / 1000.0 if key in pa else None

    thr = pa["Inferences/Second"]
    return {
        "vus": int(pa["Concurrency"]),
        "throughput_req_per_sec": thr,
        "throughput_avg": thr,
        "throughput_method": "perf_analyzer stable window",
        "avg_latency_ms": ms("Avg latency"),
        "p50_latency_ms": ms("p50 latency"),
        "p90_latency_ms": ms("p90 latency"),
        "p95_latency_ms": ms("p95 latency"),
        "p99_latency_ms": ms("p99 latency"),
        "server_queue_ms": ms("Server Queue"),
        "server_compute_input_ms": ms("Server Compute Input"),
        "server_compute_infer_ms": ms("Server Compute Infer"),
        "server_compute_output_ms": ms("Server Compute Output"),
        "inputs_per_request": batch,
        "mode": "http",
    }


def validate_sample(engine, texts: list[str], n: int = 16) -> tuple[int, str | None]:
    """Send `n` inputs through the ensemble ourselves; (bad count, first problem)."""
    import numpy as np

    spec = engine.spec
    bad, first = 0, None
    for i in range(n):
        text = texts[i % len(texts)]
        try:
            pred = engine.predict_remote([text])
            v = np.asarray(pred.values, dtype=np.float64)
            if spec.task == "classification":
                problem = (
                    f"probabilities shape {v.shape}, expected (1, {spec.num_labels})"
                    if v.shape != (1, spec.num_labels)
                    else "probabilities are not finite or do not sum to 1"
                    if not np.isfinite(v).all() or abs(v.sum() - 1) > 1e-3
                    else f"label {pred.labels} not in {spec.labels}"
                    if not pred.labels or pred.labels[0] not in spec.labels
                    else None
                )
            else:
                problem = (
                    f"embedding shape {v.shape}, expected (1, {spec.dim})"
                    if v.shape != (1, spec.dim)
                    else "embedding is not finite"
                    if not np.isfinite(v).all()
                    else "embedding is not unit norm"
                    if spec.normalize and abs(np.linalg.norm(v) - 1) > 1e-3
                    else None
                )
        except BillionbenchError as e:
            problem = str(e)
        if problem:
            bad += 1
            first = first or problem
    return bad, first


TABLE = columns(
    """
    batch_size              | batch       | 0
    vus                     | concurrency | 0
    throughput_req_per_sec  | inputs/s    | 1
    p50_latency_ms          | p50 ms      | 2
    p99_latency_ms          | p99 ms      | 2
    server_queue_ms         | queue ms    | 2
    server_compute_infer_ms | infer ms    | 2
    1B_cost                 | $/1B        | 2
"""
)


class PerfAnalyzerScenario(Scenario):
    adaptive = False  # a fixed grid: its points may run at once, on several nodes
    """`harness.run --engine triton --load perf_analyzer`: validated perf_analyzer rows.

    One point per (client batch, concurrency); perf_analyzer never checks outputs, so a
    sample of real responses is checked first and the run refused when any is wrong.
    """

    def __init__(self, config: PerfAnalyzerConfig, setup: Setup, console):
        server = setup.engine_cls.remote_server
        if server is None or not server.perf_analyzer:
            raise ConfigError(
                f"--load perf_analyzer drives a Triton server; --engine {setup.engine_cfg.engine} "
                "runs in process (add --engine triton)"
            )
        self.config, self.setup = config, setup
        self.binary, self.env = find_binary()
        self.version = version(self.binary, self.env)
        self.parity_metric = None
        if setup.engine_cls.needs_artifact(setup.engine_cfg):
            b = sorted(config.inputs_per_request)
            prepared = prepare_artifact(
                setup,
                batch_range=(b[0], b[len(b) // 2], max(b[-1], 8)),
                seq_range=(8, min(128, setup.max_len), setup.max_len),
                console=console,
            )
            self.setup = setup = replace(setup, engine_cfg=prepared.engine_cfg)
            self.parity_metric = prepared.parity_metric
        self.engine = create_engine(setup.engine_cfg)
        self.engine.load()
        bad, problem = validate_sample(self.engine, setup.workload.texts)
        if bad:
            self.engine.close()
            raise EngineError(
                f"perf_analyzer does not check outputs, and {bad} of 16 responses we checked "
                f"were wrong ({problem}); refusing to report its numbers"
            )
        self.title = f"perf_analyzer ({self.version}); latency per request, throughput inputs/s"

    def header(self) -> list[str]:
        stats, info = self.setup.workload.stats, self.engine.info
        return [
            f"[bold]billionbench[/] · {self.setup.spec.name} through {self.engine.url}"
            f" · {self.version} · 16/16 sampled responses valid · workload "
            f"{self.setup.workload.source} (avg {stats.avg:.1f} tokens) · "
            f"weights={info.get('weights')}"
        ]

    def estimate(self) -> int:
        c = self.config
        return len(c.inputs_per_request) * len(c.concurrency) * max(1, c.repeats)

    def plan(self) -> Plan:
        a = self.config
        for batch in a.inputs_per_request:
            for c in a.concurrency:
                config = {
                    **self.setup.identity("http"),
                    "load": "perf_analyzer",
                    "batch": batch,
                    "concurrency": c,
                    "measurement_ms": int(a.duration * 1000),
                    "stability_percentage": STABILITY_PCT,
                }
                label = f"perf_analyzer: batch {batch} · concurrency {c}"
                yield from repeated(config, label, (batch, c), a.repeats)

    def measure(self, point: Point, progress: Progress) -> Measurement:
        batch, c = point.params
        transport = self.engine.transport
        (pa,) = run(
            self.binary,
            self.env,
            url=self.engine.url,  # the transport's own URL
            model=self.setup.spec.name,
            texts=self.setup.workload.texts,
            concurrency=[c],
            batch=batch,
            transport=transport,
            measurement_ms=int(self.config.duration * 1000),
        )[-1:]
        row = to_row(pa, batch)
        row["repeat"] = point.config.get("repeat", 0)
        info = self.engine.info
        row.update(
            self.setup.context(info, row["throughput_req_per_sec"], self.parity_metric),
            batch_size=batch,
            # harness.serve announces backend "billionbench" in its model config
            vendor="billionbench" if info.get("triton_backend") == "billionbench" else "triton",
            protocol=f"triton-{transport}",
            load_generator=self.version,
            **{k: info.get(k) for k in TRITON_CONFIG_COLUMNS},
        )
        return Measurement(row)

    def close(self) -> None:
        self.engine.close()

    def summarize(self, console, rows, out: Path) -> None:
        print_rows(console, self.title, TABLE, rows)
