"""Over HTTP, k6-style: virtual users against our server (or any URL), with a VU search.

For each server max batch size x inputs per request the plan doubles the VUs while throughput
improves by more than the noise margin, then binary-searches between the best point and the
next one tried. The best point is always a measured one; the margin is max(--improvement, the
spread of repeated measurements). `--rate` replaces the search with one open-loop point;
`--search rate --p99-ms T` searches the highest Poisson rate whose p99 stays under T
(harness.scenarios.rate_search decides; every rate tried is a row).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from analysis import checks
from analysis.console_tables import best_row, columns, confidence_lines, print_rows
from core import energy
from core.config import arg, at_least, int_list, positive_float, to_json
from core.errors import ConfigError
from core.net import free_port
from core.processes.bench_server import ServerProcess
from core.stats import samples_needed
from harness import quality
from harness.config import ROOT, ServeCommandConfig, serve_command
from harness.results import ResultsStore
from harness.runner import Measurement, Plan, Point, Progress, Scenario
from harness.scenarios.rate_search import (
    ANSWER,
    PASS,
    PERCENTILE,
    RateSearch,
    describe_answer,
    goodput,
    probe,
    rate_columns,
    rate_result,
    search_rows,
    tally,
    verdict_of,
    with_verdict,
)
from harness.target import Setup, prepare_artifact
from loadgen import PROTOCOLS, Target, measure_ceiling
from loadgen.endpoint import counters, remote_identity, remote_parameters, server_columns
from loadgen.local import LocalLoad
from serving.config import ServeConfig

#: seconds the load generator measures its own ceiling for, once per sweep
CEILING_S = 3.0


@dataclass(frozen=True)
class HttpConfig:
    """The HTTP sweep: servers (one per max batch size), the load shapes and the VU search."""

    max_batch_sizes: tuple[int, ...] = arg(
        (),
        parse=int_list,
        aliases=("--batch-sizes", "--max-batch"),
        help="server max batch sizes, one server start (or Triton reload) each (default 8,32; "
        "the Triton sweep 1,8,32)",
    )
    inputs_per_request: tuple[int, ...] = arg(
        (1,), parse=int_list, help="client batch (inputs per HTTP request), comma-separated"
    )
    vus_start: int = arg(1, help="VUs of the search's first point")
    vus_max: int = arg(32, help="the most VUs the search tries (open loop: in flight)")
    iterations: int = arg(200, help="k6 shared iterations per point")
    max_duration: float = arg(10.0, parse=positive_float, help="seconds per point (k6 maxDuration)")
    repeats: int = arg(2, help="runs per point; gives the noise margin")
    improvement: float = arg(
        0.02, help="keep doubling VUs while throughput improves by more than this"
    )
    max_p95_ms: float | None = arg(None, parse=positive_float, help="latency limit (p95, ms)")
    max_p99_ms: float | None = arg(None, parse=positive_float, help="latency limit (p99, ms)")
    url: str | None = arg(None, help="benchmark this server instead of starting ours")
    protocol: str = arg(
        "kserve",
        choices=tuple(k for k in PROTOCOLS if k != "noop"),
        help="kserve-grpc: KServe v2 over gRPC (--url host:port, or our server started with a "
        "gRPC port)",
    )
    served_model: str | None = arg(
        None, help="model name on the target (default: the registry name)"
    )
    no_ceiling: bool = arg(False, help="skip measuring the load generator's own ceiling")
    rate: float | None = arg(
        None,
        parse=positive_float,
        help="open loop instead of the VU search: Poisson arrivals at this many requests/s for "
        "--max-duration, at most --vus-max in flight; latency counts from the scheduled send",
    )
    search: str | None = arg(
        None,
        help="what to search. Our servers and --url: vus (the VU search, the default) or rate: "
        "the highest Poisson rate whose p99 upper bound (95 percent confidence) stays under "
        "--p99-ms, from "
        "measured rates only (MLPerf's server scenario). --engine triton: the dimensions, "
        "comma-separated, of instances, max_batch, delay (default all three)",
    )
    p99_ms: float | None = arg(
        None,
        parse=positive_float,
        help="the p99 target (ms) of --search rate; on other HTTP rows the SLO of their goodput "
        "column (inputs/s answered within it)",
    )
    rate_tolerance: float = arg(
        0.1,
        parse=positive_float,
        help="--search rate stops once (lowest failing - highest passing rate) / highest "
        "passing <= this",
    )
    rate_min: float | None = arg(
        None,
        parse=positive_float,
        help="--search rate: the first rate (requests/s) and the lowest tried (default: half "
        "of what a closed-loop point at --vus-max VUs serves, halving while rates fail)",
    )
    rate_max: float | None = arg(
        None,
        parse=positive_float,
        help="--search rate: the highest rate tried (default: double until a rate fails)",
    )
    max_samples: int = arg(
        2000,
        help="--search rate: requests per rate at most; a rate still undecided then counts as "
        "failing",
    )
    rate_max_duration: float = arg(
        60.0,
        parse=positive_float,
        help="--search rate: seconds of arrivals per rate at most (undecided then: failing)",
    )
    load_workers: int | None = arg(
        None,
        help="with --executor ray and --url: this many load generators on different nodes "
        "drive the endpoint together (VUs split among them; latencies merged from every request)",
    )
    reference_model: str | None = arg(
        None,
        help="check every endpoint's answers (ours or --url) against this model's fp32 "
        "reference (sentence-transformers for embeddings, transformers for classifiers; a "
        "folder or Hub id) on a sample of the run's texts; rows get quality_* columns and a "
        "server under the gate is never ranked best",
    )
    quality_gate: float | None = arg(
        None,
        help="the gate of that check: min cosine (embeddings, default 0.99) or label agreement "
        "(classifiers, default 0.99)",
    )

    def __post_init__(self) -> None:
        if not self.max_batch_sizes:
            object.__setattr__(self, "max_batch_sizes", (8, 32))
        if self.vus_start < 1 or self.vus_max < self.vus_start:
            raise ConfigError("--vus-start must be >= 1 and <= --vus-max")
        at_least(self, 1, "repeats", "iterations", "load_workers")
        if self.search == "rate":
            self._check_rate_search()

    def _check_rate_search(self) -> None:
        if self.p99_ms is None:
            raise ConfigError(
                "--search rate needs --p99-ms T: the p99 target (ms) the highest rate must meet"
            )
        if self.rate is not None:
            raise ConfigError("--rate measures one rate and --search rate finds it: give one")
        if self.load_workers is not None:
            raise ConfigError("--search rate runs its load from this process (no --load-workers)")
        if self.rate_min and self.rate_max and self.rate_min > self.rate_max:
            raise ConfigError(f"--rate-min {self.rate_min:g} is above --rate-max {self.rate_max:g}")
        need = samples_needed(PERCENTILE)
        if self.max_samples < need:
            raise ConfigError(
                f"--max-samples must be >= {need}, the fewest that can bound a p99 at 95 %; "
                f"got {self.max_samples}"
            )

    def limits(self) -> dict[str, float | None]:
        """The latency limits of the best-point lines: --max-p99-ms, else the --p99-ms target."""
        p99 = self.max_p99_ms if self.max_p99_ms is not None else self.p99_ms
        return {"max_p95_ms": self.max_p95_ms, "max_p99_ms": p99}


TABLE = columns(
    """
    batch_size             | batch      | 0
    inputs_per_request     | inputs/req | 0
    vus                    | VUs        | 0
    throughput_req_per_sec | inputs/s   | 1
    throughput_ci_low      | inputs/s low | 1
    p50_latency_ms         | p50 ms     | 1
    p95_latency_ms         | p95 ms     | 1
    p99_latency_ms         | p99 ms     | 1
    p99_upper_ms           | p99 bound ms | 1
    failed_requests        | failed     | 0
    invalid_embeddings     | invalid    | 0
    padding_ratio          | pad frac   | 2
    non_forward_cpu_share  | non-fwd CPU| 2
    1B_cost                | $/1B       | 2
"""
)
#: the rate search's rows, by rate
RATE_TABLE = columns(
    """
    batch_size             | batch      | 0
    inputs_per_request     | inputs/req | 0
    offered_rate           | req/s      | 1
    throughput_req_per_sec | inputs/s   | 1
    goodput                | goodput/s  | 1
    n_samples              | requests   | 0
    p99_latency_ms         | p99 ms     | 1
    p99_upper_ms           | p99 bound ms | 1
    slo_ms                 | target ms  | 0
    verdict                | verdict    | 0
"""
)


# ------------------------------------------------------------------------- VU search
@dataclass
class Search:
    """The VU search over one (max batch, inputs/request) group: double the VUs while
    throughput improves by more than the noise margin, then bisect; every point measured."""

    vus_start: int
    vus_max: int
    improvement: float
    max_bisect: int = 4
    points: dict[int, list[float]] = field(default_factory=dict)  # vus -> throughputs

    def thr(self, vus: int) -> float:
        return statistics.median(self.points[vus])

    @property
    def noise(self) -> float:
        """Relative spread of repeated measurements (max - min) / median, the worst seen."""
        spreads = [
            (max(v) - min(v)) / statistics.median(v)
            for v in self.points.values()
            if len(v) > 1 and statistics.median(v) > 0
        ]
        return max(spreads, default=0.0)

    @property
    def margin(self) -> float:
        return max(self.improvement, self.noise)

    def best(self) -> int:
        return max(self.points, key=self.thr)

    def steps(self) -> Generator[int, list[float], None]:
        """Yield the VUs to try next; each `yield` is sent that point's throughputs."""
        vus, prev = self.vus_start, None
        while vus <= self.vus_max:
            self.points[vus] = yield vus
            if prev is not None and self.thr(vus) <= self.thr(prev) * (1 + self.margin):
                break
            prev, vus = vus, vus * 2
        # binary search between the best point and the next one tried above it
        for _ in range(self.max_bisect):
            best = self.best()
            above = [v for v in self.points if v > best]
            if not above:
                break
            mid = (best + min(above)) // 2
            if mid in self.points or mid == best:
                break
            self.points[mid] = yield mid


def _throughput(row: dict[str, Any]) -> float:
    v = row.get("throughput_req_per_sec")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else 0.0


# ------------------------------------------------------------------------- the scenario
@dataclass(frozen=True)
class HttpPoint:
    max_batch_size: int  # the server's
    inputs_per_request: int
    vus: int  # closed loop: VUs; open loop: the most in flight
    repeat: int
    rate: float | None = None  # open loop: Poisson arrivals, requests/s
    search: str | None = None  # "rate": a rate of the rate search (open-loop chunks)


class HttpScenario(Scenario):
    title = "HTTP sweep (latency = end to end per request; throughput = inputs/s)"

    def __init__(
        self,
        config: HttpConfig,
        setup: Setup,
        console,
        *,
        serve: ServeConfig | None = None,
        out_dir: str | Path = "results",
        load=None,
    ):
        """`serve`: how our servers batch (one per max batch size); `load`: where each point's
        load runs (default: this process, LocalLoad)."""
        self.config, self.setup, self.console = config, setup, console
        self.serve = serve or ServeConfig()
        self.out_dir = Path(out_dir)
        if load is None:
            ceiling = None if config.no_ceiling else measure_ceiling(duration_s=CEILING_S)
            load = LocalLoad(ceiling)
        self.load = load
        self.server: ServerProcess | None = None
        self.server_batch: int | None = None
        self.target: Target | None = None
        self.info: dict[str, Any] = {}
        # our servers run the artifact prepared here once, for every max batch size
        self.serve_target = setup.target
        self.parity_margin: float | None = None
        if not config.url and setup.engine_cls.needs_artifact(setup.engine_cfg):
            top = max(config.max_batch_sizes)
            prepared = prepare_artifact(
                setup,
                batch_range=(1, max(1, top // 2), top),
                console=console,
                texts=setup.workload.texts,
            )
            self.serve_target = replace(setup.target, artifact=prepared.engine_cfg.artifact)
            self.parity_margin = prepared.margin
        # only a server we start runs on this machine, where the meter reads
        self.meter = None if config.url else energy.DeviceMeter(setup.profile.device)
        self.reference: quality.Reference | None = None
        self.quality: dict[str, quality.Quality] = {}  # per endpoint URL
        if config.search not in (None, "vus", "rate"):
            raise ConfigError(
                f"--search {config.search}: our servers and --url search vus or rate "
                "(instances, max_batch, delay are the Triton sweep's: --engine triton)"
            )
        self.answers: list[str] = []  # config keys of the rate search's answers

    def header(self) -> list[str]:
        return self.setup.describe() + self.load.describe()

    def estimate(self) -> int:
        """Rough number of runs, for the progress bar (the VU search decides the rest)."""
        c = self.config
        doublings = int(math.log2(max(c.vus_max // c.vus_start, 1))) + 1
        groups = len(c.max_batch_sizes) * len(c.inputs_per_request)
        if c.search == "rate":  # a probe, a doubling or two, then the bisection
            return groups * (3 + math.ceil(math.log2(1 / c.rate_tolerance)))
        per_group = 1 if c.rate else doublings + 2
        return groups * per_group * c.repeats

    def report_limits(self) -> dict[str, float | None]:
        return self.config.limits()

    def point(self, p: HttpPoint) -> Point:
        c, b = self.config, self.serve.batcher
        config = {
            **self.setup.identity("http"),
            "max_batch_size": p.max_batch_size,
            "inputs_per_request": p.inputs_per_request,
            "vus": p.vus,
            "repeat": p.repeat,
            "iterations": c.iterations,
            "url": c.url,
            "protocol": c.protocol,
            "max_duration": c.max_duration,
            "rate": p.rate,
            "batcher": {
                "tokens": b.max_batch_tokens,
                "delay_ms": b.max_queue_delay_ms,
                "length_aware": b.length_aware,
            },
        }
        label = (
            f"max batch {p.max_batch_size} · {p.inputs_per_request} inputs/request · {p.vus} "
            f"VUs · run {p.repeat + 1}/{c.repeats}"
        )
        if p.search == "rate":  # what decides a rate's verdict is part of its identity
            config.update(
                search="rate",
                p99_target_ms=c.p99_ms,
                max_samples=c.max_samples,
                rate_max_duration=c.rate_max_duration,
            )
            label = (
                f"max batch {p.max_batch_size} · {p.inputs_per_request} inputs/request · "
                f"rate {p.rate:g} req/s · p99 <= {c.p99_ms:g} ms?"
            )
        return Point(config, label, p)

    def plan(self) -> Plan:
        c = self.config
        for bs in c.max_batch_sizes:
            for ipr in c.inputs_per_request:
                if c.search == "rate":
                    yield from self._rate_plan(bs, ipr)
                    continue
                if c.rate:  # open loop: one point per group, concurrency capped at vus-max
                    for rep in range(c.repeats):
                        yield self.point(HttpPoint(bs, ipr, c.vus_max, rep, rate=c.rate))
                    continue
                search = Search(c.vus_start, c.vus_max, c.improvement)
                steps = search.steps()
                vus = next(steps)
                while True:
                    thr = []
                    for rep in range(c.repeats):
                        row = yield self.point(HttpPoint(bs, ipr, vus, rep))
                        thr.append(_throughput(row))
                    try:
                        vus = steps.send(thr)
                    except StopIteration:
                        break
                best = search.best()
                self.console.print(
                    f"max batch {bs} · {ipr} inputs/request: best {best} VUs at "
                    f"{search.thr(best):,.1f} inputs/s (noise margin {search.margin:.1%}; "
                    f"measured VUs {sorted(search.points)})",
                    highlight=False,
                )

    def _rate_plan(self, bs: int, ipr: int) -> Plan:
        """The rate search of one (max batch, inputs/request) group; each rate is a row."""
        c = self.config
        start = c.rate_min
        if start is None:  # what the server serves when saturated: a closed-loop point
            row = yield self.point(HttpPoint(bs, ipr, c.vus_max, 0))
            start = _throughput(row) / ipr / 2
            if not start > 0:
                self.console.print(
                    f"max batch {bs} · {ipr} inputs/request: the closed-loop point at "
                    f"{c.vus_max} VUs served nothing; no rate to search from",
                    highlight=False,
                )
                return
        search = RateSearch(c.rate_tolerance, start, c.rate_min, c.rate_max)
        keys: dict[float, str] = {}
        steps = search.steps()
        rate = next(steps)
        while True:
            point = self.point(HttpPoint(bs, ipr, c.vus_max, 0, rate=rate, search="rate"))
            keys[rate] = point.key
            row = yield point
            try:
                rate = steps.send(verdict_of(row))
            except StopIteration:
                break
        if search.lo is not None:
            self.answers.append(keys[search.lo])
        self.console.print(
            f"max batch {bs} · {ipr} inputs/request: {describe_answer(search, c.p99_ms, ipr)}",
            highlight=False,
        )

    def server_config(self, max_batch_size: int, grpc_port: int | None) -> ServeCommandConfig:
        """Our server for one max batch size: the sweep's batcher and limits, requests as
        large as the largest load shape, inputs cut at the model's max length."""
        b = self.serve.batcher
        request_inputs = max(b.max_request_inputs, *self.config.inputs_per_request)
        batcher = replace(b, max_batch_size=max_batch_size, max_request_inputs=request_inputs)
        limits = replace(self.serve.limits, truncate=True)
        serve = replace(
            self.serve, batcher=batcher, limits=limits, host="127.0.0.1", grpc_port=grpc_port
        )
        return ServeCommandConfig(target=self.serve_target, serve=serve)

    def _serve(self, batch_size: int, progress: Progress) -> None:
        """Point the target at a server with this max batch (ours, started once per batch)."""
        c, spec = self.config, self.setup.spec
        if self.target is not None and (c.url or self.server_batch == batch_size):
            return
        url = c.url
        if not url:
            self._stop_server()
            progress(f"starting the server (max batch {batch_size}) ...")
            logs = self.out_dir / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            # the load goes over gRPC when asked; health and /metrics stay on HTTP
            grpc_port = free_port() if c.protocol == "kserve-grpc" else None
            config = logs / f"serve-batch{batch_size}.json"
            config.write_text(to_json(self.server_config(batch_size, grpc_port)))
            self.server = ServerProcess(
                serve_command("--config", str(config)),
                free_port(),
                logs / f"serve-batch{batch_size}.log",
                cwd=str(ROOT),
            )
            self.server.start()
            self.server_batch, url = batch_size, self.server.url
            if grpc_port:
                url = f"grpc://127.0.0.1:{grpc_port}"
            self.info = remote_parameters(self.server.url, spec.name)
        elif c.protocol != "kserve-grpc":  # what the server says it runs, if it is ours
            self.info = remote_parameters(url, c.served_model or spec.name)
        self.target = Target(
            url=url,
            protocol=c.protocol,
            model=c.served_model or spec.name,
            task=spec.task,
            dim=spec.dim if spec.task != "classification" else None,
            normalized=spec.normalize,
            labels=spec.labels,
        )
        self._check_quality(progress)

    def _check_quality(self, progress: Progress) -> None:
        """The endpoint's answers against the fp32 reference, once per endpoint."""
        c = self.config
        if not c.reference_model or self.target.url in self.quality:
            return
        progress("checking the endpoint's answers ...")
        texts = self.setup.workload.texts
        if self.reference is None:
            picked = quality.sample_texts(texts)
            self.reference = quality.reference_outputs(
                self.setup.spec.task, c.reference_model, picked
            )
        gate = None
        if c.quality_gate is not None:
            gate = quality.Gate(min_cosine=c.quality_gate, min_label_agreement=c.quality_gate)
        q = quality.check_endpoint(self.target, texts, self.reference, gate)
        self.quality[self.target.url] = q
        color = "green" if q.passed else "red"
        self.console.print(
            f"answers of {self.target.url}: [{color}]{q.describe()}[/] vs {q.reference}",
            highlight=False,
        )

    def measure(self, point: Point, progress: Progress) -> Measurement:
        c, p = self.config, point.params
        self._serve(p.max_batch_size, progress)
        progress("load running")
        server, messages = self.server, []
        before = counters(server.metrics_text()) if server else None
        meter = energy.start_meter(self.meter if server else None)
        shared = dict(inputs_per_request=p.inputs_per_request, ceiling_rps=self.load.ceiling)
        res, extra, notes = self._load(p, shared, messages)
        reading = energy.stop_meter(meter)
        row = res.to_row()
        row.update(
            self.setup.context(self.info, res.throughput.avg, self.info.get("parity_metric")),
            batch_size=p.max_batch_size,  # `batch_size` over HTTP: the server's batch
            max_batch_size=p.max_batch_size,
            server_batch_size=p.max_batch_size,  # the old name, for one release
            vendor="local" if server else "remote",
            n_models=1,
            repeat=p.repeat,
            load_workers=len(self.load.ceilings),
            loadgen_ceilings_rps=json.dumps(self.load.ceilings),
            **extra,
        )
        if c.url:  # the row says what the endpoint runs, not this command's engine flags
            row.update(remote_identity(self.info, c.protocol))
        if server:  # this point's padding and CPU split, not the server's lifetime
            row.update(server_columns(before, counters(server.metrics_text())))
            row["parity_margin"] = self.parity_margin
        q = self.quality.get(self.target.url)
        if q is not None:
            row.update(q.columns())
        if self.load.executor:  # the generators' nodes: where this point ran
            row.update(executor=self.load.executor, node=",".join(self.load.nodes))
        row.update(energy.energy_columns(reading, res.successful_requests * p.inputs_per_request))
        if row.get("energy_source"):
            messages.append(f"    {energy.describe([row])}")
        return Measurement(row, {"errors": res.errors, **notes}, messages)

    def _load(self, p: HttpPoint, shared: dict, messages: list[str]):
        """Run one point's load: (its LoadResult, columns it adds, notes for config_json)."""
        c, extra = self.config, {}
        if p.search == "rate":
            return self._rate_load(p, shared, messages)
        if p.rate:  # open loop: Poisson arrivals, at most `vus` in flight
            res = self.load.open(
                self.target,
                self.setup.workload,
                p.rate,
                c.max_duration,
                max_concurrency=p.vus,
                **shared,
            )
            messages.append(
                f"    open loop at {p.rate:g} req/s: {res.late_requests} sent late "
                f"(max {res.max_late_ms:.1f} ms)"
            )
            extra["offered_rate"] = p.rate
        else:  # k6's shared iterations
            res = self.load.closed(
                self.target, self.setup.workload, p.vus, c.iterations, c.max_duration, **shared
            )
        if c.p99_ms is not None:  # an SLO is known: the inputs/s answered within it
            extra.update(slo_ms=c.p99_ms, goodput=goodput(res, c.p99_ms))
        return res, extra, {}

    def _rate_load(self, p: HttpPoint, shared: dict, messages: list[str]):
        """One rate of the rate search: open-loop chunks until the p99 verdict is clear."""
        c, chunks = self.config, []
        limit = c.p99_ms

        def run(duration_s: float, i: int) -> tuple[int, int]:
            res = self.load.open(
                self.target,
                self.setup.workload,
                p.rate,
                duration_s,
                max_concurrency=p.vus,
                # an arrival still unanswered this long after the last one is over the target
                max_duration_s=duration_s + limit / 1e3 + 0.05,
                seed=i,
                warmup_requests=None if i == 0 else 1,
                **shared,
            )
            chunks.append(res)
            return tally(res, limit)

        pr = probe(run, p.rate, max_samples=c.max_samples, max_seconds=c.rate_max_duration)
        res = rate_result(chunks)
        extra = rate_columns(res, pr, p.rate, limit)
        upper = extra["p99_upper_ms"]
        messages.append(
            f"    rate {p.rate:g} req/s: {pr.verdict.upper()}: {pr.over} of {pr.n} requests "
            f"over {limit:g} ms ({pr.chunks} chunk(s), {pr.seconds:.1f} s); p99 "
            f"{res.latency.p99:,.1f} ms, bound {'-' if upper is None else f'{upper:,.1f}'} ms; "
            f"goodput {extra['goodput'] or 0:,.1f} inputs/s"
        )
        return res, extra, {"rate_search": pr.verdict, "rate_search_over": pr.over}

    def _mark_answers(self, rows: list[dict], out: Path) -> None:
        """The rate search's answer rows get `rate_search: "answer"` in their config_json (an
        answer of an earlier run that this one's search moved past is a pass again), here and
        in the results files (a cluster node's scratch folder has none: nothing changes)."""
        if self.config.search != "rate":
            return
        store = ResultsStore(out)
        for r in rows:
            was = verdict_of(r)
            now = ANSWER if r.get("config_key") in self.answers else was
            now = PASS if now == ANSWER and r.get("config_key") not in self.answers else now
            if now != was:
                r["config_json"] = with_verdict(r, now)
                store.annotate({"config_json": r["config_json"]}, {"config_key": r["config_key"]})

    def _stop_server(self) -> None:
        if self.server:
            self.server.stop()
        self.server, self.server_batch, self.target = None, None, None

    def close(self) -> None:
        self._stop_server()
        self.load.close()

    def summarize(self, console, rows, out: Path) -> None:
        if not rows:
            console.print("no points measured")
            return
        self._mark_answers(rows, out)
        ranked = sorted(rows, key=lambda r: r.get("1B_cost") or math.inf)
        print_rows(console, self.title, TABLE, ranked[:15])
        rates = search_rows(rows)
        if rates:
            print_rows(console, "rate search (the p99 verdict at 95 %)", RATE_TABLE, rates)
        for line in confidence_lines(rows):
            console.print(line, highlight=False)
        print_best(console, rows, self.config.limits(), what="inputs/request")
        for url, q in self.quality.items():
            if not q.passed:
                console.print(
                    f"[red]FAILING QUALITY[/]: {url} answered {q.describe()}; its rows are "
                    "never ranked best",
                    highlight=False,
                )
        console.print(energy.describe(rows), highlight=False)
        import pandas as pd

        found = checks.run_all(pd.DataFrame(rows))
        console.print("[bold]sanity checks[/]")
        checks.print_checks(console, found)
        path = out / "checks.json"
        checks.save(found, str(path))
        console.print(f"checks: {path}", highlight=False)


def print_best(console, rows: list[dict], limits: dict[str, float | None], *, what: str) -> None:
    """The cheapest point, and the cheapest within each latency limit given."""

    def describe(r: dict) -> str:
        return (
            f"${r['1B_cost']:,.2f} per 1B inputs · max batch {r['batch_size']} · "
            f"{r['inputs_per_request']} {what} · {r['vus']} VUs · "
            f"{r['throughput_req_per_sec']:,.1f} inputs/s · p95 {r['p95_latency_ms']:,.1f} ms"
        )

    best = best_row(rows)
    if best is None:
        console.print("no point without failed requests", highlight=False)
        return
    console.print(f"[bold]best[/]: {describe(best)}", highlight=False)
    for col, limit in (
        ("p95_latency_ms", limits.get("max_p95_ms")),
        ("p99_latency_ms", limits.get("max_p99_ms")),
    ):
        if limit:
            b = best_row(rows, limit_column=col, limit=limit)
            if b is None:
                console.print(f"no point meets {col} <= {limit:g} ms", highlight=False)
            else:
                console.print(
                    f"[bold]best with {col} <= {limit:g} ms[/]: {describe(b)} · "
                    f"{col} {b[col]:,.1f} ms",
                    highlight=False,
                )
