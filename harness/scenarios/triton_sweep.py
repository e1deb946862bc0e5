"""`harness.sweep` against a Triton engine: Model Analyzer's brute search, through real Triton.

Instance count x encoder max_batch_size x dynamic batching (off, or on with a queue delay), each
at a range of concurrencies. One tritonserver runs for the whole sweep in explicit model-control
mode; every configuration is written into a working copy of the repository and reloaded through
the repository API. Outputs are validated by our load generator on every response, so a model
that answers with empty tensors cannot post good numbers.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from analysis.console_tables import best_row, columns, print_rows
from core.config import arg, at_least, int_list, positive_float
from core.errors import ConfigError
from core.processes.tritonserver import TritonServer
from engines.triton.remote import counters, stats_delta
from exporters.triton import (
    ENCODER,
    TritonExporter,
    TritonOptions,
    repository_models,
    set_encoder_serving,
)
from harness.runner import Measurement, Plan, Point, Progress, Scenario
from harness.target import Setup, prepare_artifact
from loadgen import Target, measure_ceiling, run_closed_loop

DIMENSIONS = ("instances", "max_batch", "delay")


def parse_delays(text: str) -> tuple[int | None, ...]:
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part == "off":
            out.append(None)
            continue
        try:
            value = int(part)
        except ValueError:
            raise ConfigError(
                f"--queue-delays-us takes 'off' or microseconds (e.g. off,0,2000); got {part!r}"
            ) from None
        if value < 0:
            raise ConfigError(f"--queue-delays-us must be >= 0; got {value}")
        out.append(value)
    if not out:
        raise ConfigError("--queue-delays-us is empty")
    return tuple(out)


@dataclass(frozen=True)
class TritonSweepConfig:
    """Model Analyzer's brute search: instances x max batch x dynamic batching, each at a range
    of concurrencies, through a real tritonserver."""

    # the flag is HttpConfig's (the sweep shares one --search): unset means every dimension
    search: str | None = arg(
        None,
        help="dimensions to search (others keep their first value): instances, max_batch, delay "
        "(default all three)",
    )
    instances: tuple[int, ...] = arg((1, 2, 4), parse=int_list, help="instance_group counts")
    max_batch_sizes: tuple[int, ...] = arg(
        (), parse=int_list, help="encoder max_batch_size values (default 1,8,32)"
    )
    queue_delays_us: str = arg(
        "off,500",
        help="dynamic batching: 'off', or on with this max_queue_delay_microseconds",
    )
    concurrency: tuple[int, ...] = arg(
        (1, 8, 32), parse=int_list, help="concurrent clients per config"
    )
    inputs_per_request: tuple[int, ...] = arg((1,), parse=int_list, help="client batch")
    iterations: int = arg(200, help="shared iterations per point")
    max_duration: float = arg(10.0, parse=positive_float, help="seconds per point")
    no_ceiling: bool = arg(False, help="skip measuring the load generator's own ceiling")
    max_p99_ms: float | None = arg(None, parse=positive_float, help="latency limit (p99, ms)")

    def __post_init__(self) -> None:
        if not self.max_batch_sizes:
            object.__setattr__(self, "max_batch_sizes", (1, 8, 32))
        if self.search is None:
            object.__setattr__(self, "search", ",".join(DIMENSIONS))
        at_least(self, 1, "instances", "concurrency", "iterations")
        parse_delays(self.queue_delays_us)  # one-line error at the flag


TABLE = columns(
    """
    vus                     | concurrency      | 0
    max_batch_size          | max batch        | 0
    dynamic                 | dynamic batching | 0
    triton_instances        | instances        | 0
    p95_latency_ms          | p95 ms           | 1
    p99_latency_ms          | p99 ms           | 1
    throughput_req_per_sec  | inputs/s         | 2
    server_avg_batch        | avg batch        | 2
    server_queue_ms         | queue ms         | 1
    server_compute_infer_ms | infer ms         | 1
    server_rss_mb           | memory MiB       | 0
    failed_requests         | failed           | 0
    1B_cost                 | $/1B             | 2
"""
)


@dataclass(frozen=True)
class TritonConfig:
    """The encoder's serving configuration at one point of the search."""

    instances: int
    max_batch: int
    delay_us: int | None  # None: dynamic batching off

    @property
    def dynamic(self) -> bool:
        return self.delay_us is not None

    def label(self) -> str:
        dyn = f"dyn {self.delay_us} us" if self.dynamic else "no dyn"
        return f"{self.instances} inst · max batch {self.max_batch} · {dyn}"


def grid(config: TritonSweepConfig) -> list[TritonConfig]:
    """The brute-force grid; dimensions not in --search keep their first value."""
    search = {s.strip() for s in config.search.split(",") if s.strip()}
    unknown = search - set(DIMENSIONS)
    if unknown:
        raise ConfigError(
            f"--search takes {', '.join(DIMENSIONS)}; got {', '.join(sorted(unknown))}"
        )
    instances = config.instances if "instances" in search else config.instances[:1]
    batches = config.max_batch_sizes if "max_batch" in search else config.max_batch_sizes[:1]
    delays = parse_delays(config.queue_delays_us)
    delays = delays if "delay" in search else delays[:1]
    client = max(config.inputs_per_request)
    small = [b for b in batches if b < client]
    if small:
        raise ConfigError(
            f"--max-batch-sizes {small[0]} is below --inputs-per-request {client}: Triton would "
            "refuse the requests; raise --max-batch-sizes or lower --inputs-per-request"
        )
    return [TritonConfig(i, b, d) for i, b, d in itertools.product(instances, batches, delays)]


class TritonScenario(Scenario):
    title = (
        "Triton config sweep (latency end to end per request; throughput = inputs/s; "
        "memory = tritonserver + backend stubs RSS)"
    )

    def __init__(
        self, config: TritonSweepConfig, setup: Setup, console, *, out_dir: str | Path = "results"
    ):
        self.config, self.setup = config, setup
        self.configs = grid(config)
        self.concurrency = sorted(set(config.concurrency))
        self.client_max = max(config.inputs_per_request)
        self.backend = setup.engine_cfg.variant or "python"
        self.gpu = setup.profile.device == "cuda"
        # the repository: exported (parity-gated) once, then a working copy the sweep rewrites
        first = TritonOptions(
            backend=self.backend,
            max_batch_size=max(c.max_batch for c in self.configs),
            client_max_batch=self.client_max,
            gpu=self.gpu,
        )
        prepared = prepare_artifact(
            setup,
            seq_range=(8, min(128, setup.max_len), setup.max_len),
            console=console,
            variant=self.backend,
            exporter=TritonExporter(first),
            expect={"format": "triton", "model": setup.spec.name},
        )
        self.manifest = prepared.manifest
        self.backend = self.manifest.details.get("backend", self.backend)
        self.parity_metric = prepared.parity.get("metric")
        self.work = Path(out_dir) / "triton-repository"
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(prepared.engine_cfg.artifact, self.work)
        repository_models(self.work)  # every config parses before the server starts
        self.ceiling = None if config.no_ceiling else measure_ceiling(duration_s=3.0)
        self.info = {
            "weights": self.manifest.weights,
            "model_source": self.manifest.model_id,
            "tokenizer": self.manifest.tokenizer,
        }
        self.server: TritonServer | None = None
        self.loaded: TritonConfig | None = None

    def header(self) -> list[str]:
        s, stats = self.setup, self.setup.workload.stats
        return [
            f"[bold]billionbench triton sweep[/] · {s.spec.name} · {self.backend} encoder · hw "
            f"{s.profile.name} = {s.detected.device_name} at ${s.profile.price_per_hour}/hr · "
            f"{len(self.configs)} configurations x concurrency {self.concurrency} · workload "
            f"{s.workload.source} (avg {stats.avg:.1f} tokens) · weights={self.manifest.weights}"
        ]

    def estimate(self) -> int:
        return len(self.configs) * len(self.concurrency)

    def report_limits(self) -> dict[str, float | None]:
        return {"max_p99_ms": self.config.max_p99_ms}

    def plan(self) -> Plan:
        a = self.config
        for cfg in self.configs:
            for c in self.concurrency:
                config = {
                    **self.setup.identity("http"),
                    "server": "triton",
                    "backend": self.backend,
                    "triton": asdict(cfg),
                    "concurrency": c,
                    "inputs_per_request": self.client_max,
                    "iterations": a.iterations,
                    "max_duration": a.max_duration,
                }
                yield Point(config, f"{cfg.label()} · concurrency {c}", (cfg, c))

    def _load(self, cfg: TritonConfig, progress: Progress) -> list[str]:
        """Start the server once, and (re)load the encoder with this point's configuration."""
        messages = []
        if self.server is None:
            progress("starting tritonserver ...")
            self.server = TritonServer(
                self.work, models=[self.setup.spec.name], ready_timeout_s=600
            )
            self.server.start()
            messages.append(
                f"tritonserver: {self.server.install.source} at {self.server.url} "
                f"(log {self.server.log_file()})"
            )
        if self.loaded != cfg:
            progress(f"reloading the encoder: {cfg.label()} ...")
            opts = TritonOptions(
                backend=self.backend,
                max_batch_size=cfg.max_batch,
                dynamic_batching=cfg.dynamic,
                max_queue_delay_us=cfg.delay_us or 0,
                instances=cfg.instances,
                client_max_batch=self.client_max,
                gpu=self.gpu,
            )
            set_encoder_serving(self.work, opts)
            self.server.load(ENCODER)
            self.server.load(self.setup.spec.name)
            self.loaded = cfg
        return messages

    def measure(self, point: Point, progress: Progress) -> Measurement:
        cfg, c = point.params
        messages = self._load(cfg, progress)
        spec, server = self.setup.spec, self.server
        target = Target(
            url=server.url,
            protocol="triton",
            model=spec.name,
            task=spec.task,
            dim=spec.dim if spec.task != "classification" else None,
            normalized=spec.normalize,
            labels=spec.labels,
        )
        progress("load running")
        before = server.statistics(ENCODER)
        res = run_closed_loop(
            target,
            self.setup.workload,
            vus=c,
            iterations=self.config.iterations,
            max_duration_s=self.config.max_duration,
            inputs_per_request=self.client_max,
            ceiling_rps=self.ceiling,
        )
        after = server.statistics(ENCODER)
        row = res.to_row()
        row.update(
            self.setup.context(self.info, res.throughput.avg, self.parity_metric),
            image=f"triton/{self.backend}/{self.setup.engine_cfg.precision}",
            batch_size=cfg.max_batch,  # `batch_size` over HTTP: the server's batch
            max_batch_size=cfg.max_batch,
            server_batch_size=cfg.max_batch,  # the old name, for one release
            vendor="triton",
            n_models=cfg.instances,
            repeat=0,
            triton_instances=cfg.instances,
            triton_max_batch=cfg.max_batch,
            triton_dynamic_batching=cfg.dynamic,
            triton_queue_delay_us=cfg.delay_us,
            server_rss_mb=server.rss_mb(),
        )
        row.update(stats_delta(counters(before), counters(after)))
        if res.failed_requests:
            messages.append(
                f"    [yellow]{res.failed_requests} failed / "
                f"{res.invalid_embeddings} invalid outputs[/]"
            )
        notes = {"errors": res.errors, "tritonserver": server.install.source}
        return Measurement(row, notes, messages)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.server, self.loaded = None, None

    def summarize(self, console, rows, out: Path) -> None:
        """Concurrency, max batch, dynamic batching, instances, p95 and memory, per configuration."""
        if not rows:
            console.print("no points measured")
            return
        shown = sorted(
            ({**r, "dynamic": _dynamic(r)} for r in rows),
            key=lambda r: (r["triton_instances"], r["max_batch_size"], r["vus"]),
        )
        print_rows(console, self.title, TABLE, shown)
        limit = self.config.max_p99_ms
        b = best_row(rows, limit_column="p99_latency_ms", limit=limit)
        within = f" with p99 <= {limit:g} ms" if limit else ""
        if b is None:
            console.print(f"no configuration without failures{within}", highlight=False)
        else:
            console.print(
                f"[bold]best{within}[/]: ${b['1B_cost']:,.2f} per 1B inputs · "
                f"{b['triton_instances']} instance(s) · max batch {b['max_batch_size']} · "
                f"dynamic batching {_dynamic(b)} · concurrency {b['vus']} · "
                f"{b['throughput_req_per_sec']:,.2f} inputs/s · p99 {b['p99_latency_ms']:,.1f} ms",
                highlight=False,
            )


def _dynamic(r: dict[str, Any]) -> str:
    d = r.get("triton_queue_delay_us")
    return "off" if d is None or d != d else f"on, {int(d)} us"
