"""Over HTTP, k6-style: virtual users against our server (or any URL), with the seed's VU search.

For each server batch size x inputs per request the plan doubles the VUs while throughput
improves by more than the noise margin, then binary-searches between the best point and the
next one tried. The best point is always a measured one; the margin is max(--improvement, the
spread of repeated measurements). `--rate` replaces the search with one open-loop point.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.errors import ConfigError
from engines.net import free_port
from engines.processes.serve import ServerProcess
from harness import checks, energy
from harness.cli import serve_argv
from harness.load import Target, measure_ceiling
from harness.load.endpoint import counters, remote_identity, remote_parameters, server_columns
from harness.load.strategies import LocalLoad
from harness.runner import Measurement, Plan, Point, Progress, Scenario
from harness.setup import Setup
from harness.tables import best_row, columns, print_rows

#: seconds the load generator measures its own ceiling for, once per sweep
CEILING_S = 3.0

TABLE = columns(
    """
    batch_size             | batch      | 0
    inputs_per_request     | inputs/req | 0
    vus                    | VUs        | 0
    throughput_req_per_sec | inputs/s   | 1
    p50_latency_ms         | p50 ms     | 1
    p95_latency_ms         | p95 ms     | 1
    p99_latency_ms         | p99 ms     | 1
    failed_requests        | failed     | 0
    invalid_embeddings     | invalid    | 0
    padding_ratio          | pad frac   | 2
    non_forward_cpu_share  | non-fwd CPU| 2
    1B_cost                | $/1B       | 2
"""
)


# ------------------------------------------------------------------------- VU search
@dataclass
class Search:
    """The seed's VU search over one (batch size, inputs/request) group, on measured points."""

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
    batch_size: int  # the server's max batch
    inputs_per_request: int
    vus: int
    repeat: int


class HttpScenario(Scenario):
    title = "HTTP sweep (latency = end to end per request; throughput = inputs/s)"

    def __init__(self, args: argparse.Namespace, setup: Setup, console, load=None):
        """`load`: where each point's load runs (default: this process, LocalLoad)."""
        if args.vus_start < 1 or args.vus_max < args.vus_start:
            raise ConfigError("--vus-start must be >= 1 and <= --vus-max")
        if args.repeats < 1 or args.iterations < 1:
            raise ConfigError("--repeats and --iterations must be >= 1")
        self.args, self.setup, self.console = args, setup, console
        if load is None:
            load = LocalLoad(None if args.no_ceiling else measure_ceiling(duration_s=CEILING_S))
        self.load = load
        self.server: ServerProcess | None = None
        self.server_batch: int | None = None
        self.target: Target | None = None
        self.info: dict[str, Any] = {}
        # only a server we start runs on this machine, where the meter reads
        self.meter = None if args.url else energy.DeviceMeter(setup.profile.device)

    def header(self) -> list[str]:
        return self.setup.describe() + self.load.describe()

    def estimate(self) -> int:
        """Rough number of runs, for the progress bar (the VU search decides the rest)."""
        a = self.args
        doublings = int(math.log2(max(a.vus_max // a.vus_start, 1))) + 1
        per_group = 1 if a.rate else doublings + 2
        return len(a.batch_sizes) * len(a.inputs_per_request) * per_group * a.repeats

    def point(self, p: HttpPoint) -> Point:
        a = self.args
        config = {
            **self.setup.identity("http"),
            "server_batch_size": p.batch_size,
            "inputs_per_request": p.inputs_per_request,
            "vus": p.vus,
            "repeat": p.repeat,
            "iterations": a.iterations,
            "url": a.url,
            "protocol": a.protocol,
            "max_duration": a.max_duration,
            "rate": a.rate,
            "batcher": {
                "tokens": a.max_batch_tokens,
                "delay_ms": a.max_queue_delay_ms,
                "fifo": a.fifo,
            },
        }
        label = (
            f"batch {p.batch_size} · {p.inputs_per_request} inputs/request · {p.vus} VUs · "
            f"run {p.repeat + 1}/{a.repeats}"
        )
        return Point(config, label, p)

    def plan(self) -> Plan:
        a = self.args
        for bs in a.batch_sizes:
            for ipr in a.inputs_per_request:
                if a.rate:  # open loop: one point per group, concurrency capped at vus-max
                    for rep in range(a.repeats):
                        yield self.point(HttpPoint(bs, ipr, a.vus_max, rep))
                    continue
                search = Search(a.vus_start, a.vus_max, a.improvement)
                steps = search.steps()
                vus = next(steps)
                while True:
                    thr = []
                    for rep in range(a.repeats):
                        row = yield self.point(HttpPoint(bs, ipr, vus, rep))
                        thr.append(_throughput(row))
                    try:
                        vus = steps.send(thr)
                    except StopIteration:
                        break
                best = search.best()
                self.console.print(
                    f"batch {bs} · {ipr} inputs/request: best {best} VUs at "
                    f"{search.thr(best):,.1f} inputs/s (noise margin {search.margin:.1%}; "
                    f"measured VUs {sorted(search.points)})",
                    highlight=False,
                )

    def _serve(self, batch_size: int, progress: Progress) -> None:
        """Point the target at a server with this max batch (ours, started once per batch)."""
        a, spec = self.args, self.setup.spec
        if self.target is not None and (a.url or self.server_batch == batch_size):
            return
        url = a.url
        if not url:
            self._stop_server()
            progress(f"starting the server (max batch {batch_size}) ...")
            log = Path(a.output_dir) / "logs" / f"serve-batch{batch_size}.log"
            argv = serve_argv(a, batch_size)
            grpc_port = free_port() if a.protocol == "kserve-grpc" else None
            if grpc_port:  # the load goes over gRPC; health and /metrics stay on HTTP
                argv += ["--grpc-port", str(grpc_port)]
            self.server = ServerProcess(argv, free_port(), log)
            self.server.start()
            self.server_batch, url = batch_size, self.server.url
            if grpc_port:
                url = f"grpc://127.0.0.1:{grpc_port}"
            self.info = remote_parameters(self.server.url, spec.name)
        elif a.protocol != "kserve-grpc":  # what the server says it runs, if it is ours
            self.info = remote_parameters(url, a.served_model or spec.name)
        self.target = Target(
            url=url,
            protocol=a.protocol,
            model=a.served_model or spec.name,
            task=spec.task,
            dim=spec.dim if spec.task != "classification" else None,
            normalized=spec.normalize,
            labels=spec.labels,
        )

    def measure(self, point: Point, progress: Progress) -> Measurement:
        a, p = self.args, point.params
        self._serve(p.batch_size, progress)
        progress("load running")
        server, messages = self.server, []
        before = counters(server.metrics_text()) if server else None
        meter = energy.start_meter(self.meter if server else None)
        shared = dict(inputs_per_request=p.inputs_per_request, ceiling_rps=self.load.ceiling)
        if a.rate:  # open loop: Poisson arrivals, at most `vus` in flight
            res = self.load.open(
                self.target,
                self.setup.workload,
                a.rate,
                a.max_duration,
                max_concurrency=p.vus,
                **shared,
            )
            messages.append(
                f"    open loop at {a.rate:g} req/s: {res.late_requests} sent late "
                f"(max {res.max_late_ms:.1f} ms)"
            )
        else:  # k6's shared iterations
            res = self.load.closed(
                self.target, self.setup.workload, p.vus, a.iterations, a.max_duration, **shared
            )
        reading = energy.stop_meter(meter)
        row = res.to_row()
        row.update(
            self.setup.context(self.info, res.throughput.avg, self.info.get("parity_metric")),
            batch_size=p.batch_size,
            server_batch_size=p.batch_size,
            vendor="local" if server else "remote",
            n_models=1,
            repeat=p.repeat,
            load_workers=len(self.load.ceilings),
            loadgen_ceilings_rps=json.dumps(self.load.ceilings),
        )
        if a.url:  # the row says what the endpoint runs, not this command's engine flags
            row.update(remote_identity(self.info, a.protocol))
        if server:  # this point's padding and CPU split, not the server's lifetime
            row.update(server_columns(before, counters(server.metrics_text())))
        if self.load.executor:  # the generators' nodes: where this point ran
            row.update(executor=self.load.executor, node=",".join(self.load.nodes))
        row.update(energy.energy_columns(reading, res.successful_requests * p.inputs_per_request))
        if row.get("energy_source"):
            messages.append(f"    {energy.describe([row])}")
        return Measurement(row, {"errors": res.errors}, messages)

    def _stop_server(self) -> None:
        if self.server:
            self.server.stop()
        self.server, self.server_batch, self.target = None, None, None

    def close(self) -> None:
        self._stop_server()
        self.load.close()

    def summarize(self, console, rows, store) -> None:
        if not rows:
            console.print("no points measured")
            return
        ranked = sorted(rows, key=lambda r: r.get("1B_cost") or math.inf)
        print_rows(console, self.title, TABLE, ranked[:15])
        print_best(console, rows, self.args, what="inputs/request")
        console.print(energy.describe(rows), highlight=False)
        import pandas as pd

        found = checks.run_all(pd.DataFrame(rows))
        console.print("[bold]sanity checks[/]")
        checks.print_checks(console, found)
        path = os.path.join(self.args.output_dir, "checks.json")
        checks.save(found, path)
        console.print(f"results: {store.csv} · checks: {path}", highlight=False)


def print_best(console, rows: list[dict], args, *, what: str) -> None:
    """The cheapest point, and the cheapest within each latency limit given."""

    def describe(r: dict) -> str:
        return (
            f"${r['1B_cost']:,.2f} per 1B inputs · batch {r['batch_size']} · "
            f"{r['inputs_per_request']} {what} · {r['vus']} VUs · "
            f"{r['throughput_req_per_sec']:,.1f} inputs/s · p95 {r['p95_latency_ms']:,.1f} ms"
        )

    best = best_row(rows)
    if best is None:
        console.print("no point without failed requests", highlight=False)
        return
    console.print(f"[bold]best[/]: {describe(best)}", highlight=False)
    for col, limit in (("p95_latency_ms", args.max_p95_ms), ("p99_latency_ms", args.max_p99_ms)):
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
