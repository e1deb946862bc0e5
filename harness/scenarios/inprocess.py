"""In process, neuronperf-style: inputs per call x model copies x worker threads per copy."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from analysis.console_tables import columns, confidence_lines, isa_hints, print_rows
from core import energy
from core.config import arg, int_list, positive_float
from core.costs import cost_per_1m_tokens
from core.errors import ConfigError
from core.measure import NEURONPERF_STATS
from engines.base import HintsPadding, fields_from
from harness.results import TRITON_CONFIG_COLUMNS
from harness.runner import Measurement, Plan, Point, Progress, Scenario, repeated
from harness.scenarios.inprocess_loop import InprocessPoint, InprocessResult, run_inprocess
from harness.target import Setup, with_artifact


@dataclass(frozen=True)
class InprocessConfig:
    """The in-process grid (neuronperf-style) and how long each point is measured."""

    inputs_per_request: tuple[int, ...] = arg(
        (1, 8, 32),
        parse=int_list,
        aliases=("--batch-sizes",),
        help="inputs per call (the client batch), comma-separated",
    )
    n_models: tuple[int, ...] = arg((1,), parse=int_list, help="model copies, comma-separated")
    workers_per_model: tuple[int, ...] = arg(
        (1,), parse=int_list, help="threads feeding each copy, comma-separated"
    )
    processes: bool = arg(False, help="run model copies as processes instead of threads")
    duration: float = arg(5.0, parse=positive_float, help="minimum timed seconds per configuration")
    min_calls: int = arg(10, help="minimum timed calls per configuration (both minima must be met)")
    warmup: int = arg(2, help="untimed warm-up calls per model copy")
    repeats: int = arg(
        1,
        help="runs of each configuration, one row each; with 2 or more, harness.compare and the "
        "planner use the t-interval across them (one run: batch means over its 1-s windows)",
    )
    max_duration: float | None = arg(
        None,
        parse=positive_float,
        help="hard stop per configuration in seconds (default 10 x duration + 120 s)",
    )

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ConfigError(f"--repeats must be >= 1; got {self.repeats}")
        # every point of the grid is valid: one check, the point's own
        self.point(self.inputs_per_request[0], self.n_models[0], self.workers_per_model[0])

    def point(self, inputs_per_request: int, n_models: int, workers: int) -> InprocessPoint:
        return fields_from(
            InprocessPoint,
            self,
            inputs_per_request=inputs_per_request,
            n_models=n_models,
            workers_per_model=workers,
        )


TABLE = columns(
    """
    batch_size        | batch         | 0
    n_models          | n_models      | 0
    workers_per_model | workers       | 0
    latency_ms_p50    | fwd p50 ms    | 2
    latency_ms_p99    | fwd p99 ms    | 2
    p99_latency_ms    | e2e p99 ms    | 2
    p99_upper_ms      | p99 bound ms  | 2
    throughput_avg    | inputs/s      | 1
    throughput_ci_low | inputs/s low  | 1
    padding_ratio     | pad frac      | 2
    cost_per_1m_inf   | $/1M          | 3
    1B_cost           | $/1B          | 2
    floor_1B_cost     | floor $/1B    | 2
    efficiency        | efficiency    | 3
"""
)


class InprocessScenario(Scenario):
    title = "in-process results (latency_ms_* = forward only; e2e = tokenize+forward+post)"
    adaptive = False  # a fixed grid: its points may run at once, on several nodes

    def __init__(self, config: InprocessConfig, setup: Setup, console):
        self.config = config
        self.setup, self.parity_metric, self.parity_margin = with_artifact(
            setup, console, config.inputs_per_request
        )
        self.engines: list = []  # loaded copies, reused across points (thread mode)
        self.meter = energy.DeviceMeter(self.setup.profile.device)

    def header(self) -> list[str]:
        return self.setup.describe()

    def estimate(self) -> int:
        c = self.config
        return len(c.n_models) * len(c.workers_per_model) * len(c.inputs_per_request) * c.repeats

    def plan(self) -> Plan:
        c = self.config
        for n in c.n_models:
            for w in c.workers_per_model:
                for b in c.inputs_per_request:
                    point = c.point(b, n, w)
                    config = {
                        **self.setup.identity("inprocess"),
                        "inprocess": asdict(point),
                        "threads": self.setup.engine_cfg.threads,
                    }
                    label = f"batch {b} · n_models {n} · workers {w}"
                    yield from repeated(config, label, point, c.repeats)

    def measure(self, point: Point, progress: Progress) -> Measurement:
        p: InprocessPoint = point.params
        duration = self.config.duration

        def report(elapsed: float, calls: int) -> None:
            progress(f"{elapsed:5.1f}s/{duration:g}s · {calls} calls")

        res = run_inprocess(
            self.setup.engine_cfg,
            self.setup.workload,
            p,
            engines=None if p.processes else self.engines,
            progress=report,
            meter=self.meter,
        )
        notes = {
            "hit_deadline": res.hit_deadline,
            "engine_info": {k: v for k, v in res.engine_info.items() if k != "parity"},
        }
        row = self.row(res)
        row["repeat"] = point.config.get("repeat", 0)
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
            "batch_size": cfg.inputs_per_request,  # `batch_size` in process: the call's batch
            "vus": cfg.n_models * cfg.workers_per_model,
            "vendor": "local",
            "n_models": cfg.n_models,
            "workers_per_model": cfg.workers_per_model,
            "avg_num_vectors": vectors and vectors[1],
            "min_num_vectors": vectors and vectors[0],
            "max_num_vectors": vectors and vectors[2],
            "invalid_embeddings": res.invalid,
            "inputs_per_request": cfg.inputs_per_request,
            **res.forward.columns("latency_ms_{}", NEURONPERF_STATS),
            "throughput_avg": thr,
            "mode": "inprocess",
            "protocol": "python" + ("-processes" if cfg.processes else "-threads"),
            "padding_ratio": res.padding_ratio,
            "accuracy": res.accuracy,
            "throughput_method": res.throughput.method,
            **res.throughput.interval_columns(),
            **res.e2e.bound_columns(),
            "cpu_percent": res.cpu_percent,
            "peak_rss_mb": res.peak_rss_mb,
            "peak_gpu_mem_mb": res.peak_gpu_mem_mb,
        }
        row.update(self.setup.context(info, thr, self.parity_metric))
        row["parity_margin"] = self.parity_margin
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

    def summarize(self, console, rows, out: Path) -> None:
        print_rows(console, self.title, TABLE, rows)
        profile = self.setup.profile
        weights = rows[0].get("weights") if rows else "?"
        console.print(
            f"weights={weights} · cost = ${profile.price_per_hour}/hr x 1e9 / (3600 x inputs/s)"
            "; floor = FLOPs/input at peak",
            highlight=False,
        )
        console.print(energy.describe(rows), highlight=False)
        for line in confidence_lines(rows):
            console.print(line, highlight=False)
        console.print(
            "next: compare exports (--engine onnx --variant optimized --precision int8, "
            "--engine compile, --engine aoti, --engine triton), model copies (--n-models 1,2), "
            "HTTP with python -m harness.sweep, or merge runs with python -m harness.report",
            highlight=False,
        )
        for line in isa_hints(rows):
            console.print(line, highlight=False)
        padded = max((r.get("padding_ratio") or 0.0 for r in rows), default=0.0)
        options = self.setup.engine_cfg.options
        hint = (
            options.padding_hint() if padded >= 0.1 and isinstance(options, HintsPadding) else None
        )
        if hint:
            console.print(
                f"padding took up to {padded:.0%} of the token slots computed: {hint}; a batch "
                "job: --scenario offline (length-sorted batches, padding under 5 %)",
                highlight=False,
            )
        if weights == "random":
            console.print(
                "[yellow]weights=random: latency/throughput are valid for the "
                "architecture; predictions are meaningless[/]"
            )
