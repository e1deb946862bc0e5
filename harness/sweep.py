"""`python -m harness.sweep`: seed 000's HTTP sweep, with its VU search fixed.

For each server batch size x inputs per request it starts `harness.serve` (or targets `--url`),
doubles the VUs while throughput improves by more than the noise margin, then binary-searches
between the last two points. Every measured point is a result row (`mode=http`), appended at
once and skipped on resume. The best point is always one that was measured; the noise margin
is max(--improvement, the spread of repeated measurements).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from engines.errors import BillionbenchError, ConfigError, EngineError
from engines.net import free_port
from harness.run import (
    _Parser,
    _setup_logging,
    add_common_args,
    add_workload_args,
    int_list,
    positive_float,
    print_error,
)

log = logging.getLogger("billionbench")


# ------------------------------------------------------------------------- server process
class ServerProcess:
    """`python -m harness.serve` in a subprocess: start(), stop(), log_file()."""

    def __init__(self, argv: list[str], port: int, ready_timeout_s: float = 600.0):
        self.argv = argv
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_timeout_s = ready_timeout_s
        self._log = tempfile.NamedTemporaryFile(prefix="bb-serve-", suffix=".log", delete=False)
        self.proc: subprocess.Popen | None = None

    def log_file(self) -> str:
        return self._log.name

    def start(self) -> None:
        import urllib.request

        cmd = [sys.executable, "-m", "harness.serve", *self.argv, "--port", str(self.port)]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = Path(self.log_file()).read_text(errors="replace").strip().splitlines()
                raise EngineError(
                    f"the server exited: {tail[-1] if tail else 'no output'} "
                    f"(log: {self.log_file()})"
                )
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise EngineError(
            f"the server was not ready in {self.ready_timeout_s:.0f} s (log: {self.log_file()})"
        )

    def get_json(self, path: str) -> dict:
        import urllib.request

        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return json.loads(r.read())

    def metric(self, name: str) -> float | None:
        import urllib.request

        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None

    def tokens(self) -> tuple[float, float]:
        """(useful, padded) token counters from /metrics."""
        return (
            self.metric("bb_useful_tokens_total") or 0.0,
            self.metric("bb_padded_tokens_total") or 0.0,
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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

    def run(self, measure) -> int:
        """`measure(vus)` returns a list of throughputs (one per repeat). Returns the best VUs."""
        vus, prev = self.vus_start, None
        while vus <= self.vus_max:
            self.points[vus] = measure(vus)
            if prev is not None and self.thr(vus) <= self.thr(prev) * (1 + self.margin):
                break
            prev, vus = vus, vus * 2
        # binary search between the best point and the next one tried above it
        for _ in range(self.max_bisect):
            best = self.best()
            above = [v for v in self.points if v > best]
            if not above:
                break
            hi = min(above)
            mid = (best + hi) // 2
            if mid in self.points or mid == best:
                break
            self.points[mid] = measure(mid)
        return self.best()


# ------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    from harness.serve import add_batcher_args

    p = _Parser(
        prog="harness.sweep",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_args(p)
    add_batcher_args(p)
    add_workload_args(p)
    g = p.add_argument_group("sweep")
    g.add_argument(
        "--batch-sizes",
        type=int_list,
        default=[8, 32],
        help="server max batch sizes, one server start each",
    )
    g.add_argument(
        "--inputs-per-request",
        type=int_list,
        default=[1],
        help="client batch (inputs per HTTP request), comma-separated",
    )
    g.add_argument("--vus-start", type=int, default=1)
    g.add_argument("--vus-max", type=int, default=32)
    g.add_argument("--iterations", type=int, default=200, help="k6 shared iterations per point")
    g.add_argument(
        "--max-duration",
        type=positive_float,
        default=10.0,
        help="seconds per point (k6 maxDuration)",
    )
    g.add_argument("--repeats", type=int, default=2, help="runs per point; gives the noise margin")
    g.add_argument(
        "--improvement",
        type=float,
        default=0.02,
        help="keep doubling VUs while throughput improves by more than this",
    )
    g.add_argument("--max-p95-ms", type=positive_float, default=None)
    g.add_argument("--max-p99-ms", type=positive_float, default=None)
    g.add_argument("--url", default=None, help="benchmark this server instead of starting ours")
    g.add_argument(
        "--protocol", choices=("kserve", "triton", "openai", "classify", "hf"), default="kserve"
    )
    g.add_argument(
        "--served-model", default=None, help="model name on the target (default: the registry name)"
    )
    g.add_argument(
        "--no-ceiling", action="store_true", help="skip measuring the load generator's own ceiling"
    )
    g.add_argument(
        "--rate",
        type=positive_float,
        default=None,
        help="open loop instead of the VU search: Poisson arrivals at this many requests/s for "
        "--max-duration, at most --vus-max in flight; latency counts from the scheduled send",
    )
    g = p.add_argument_group(
        "triton (--engine triton: Model Analyzer-style search through a real tritonserver)"
    )
    g.add_argument(
        "--search",
        default="instances,max_batch,delay",
        help="dimensions to search (others keep their first value): instances, max_batch, delay",
    )
    g.add_argument("--instances", type=int_list, default=[1, 2, 4], help="instance_group counts")
    g.add_argument(
        "--max-batch", type=int_list, default=[1, 8, 32], help="encoder max_batch_size values"
    )
    g.add_argument(
        "--queue-delays-us",
        default="off,500",
        help="dynamic batching: 'off', or on with this max_queue_delay_microseconds",
    )
    g.add_argument(
        "--concurrency", type=int_list, default=[1, 8, 32], help="concurrent clients per config"
    )
    g = p.add_argument_group("output")
    g.add_argument("--output-dir", default="results")
    r = g.add_mutually_exclusive_group()
    r.add_argument("--resume", dest="resume", action="store_true", default=True)
    r.add_argument("--fresh", dest="resume", action="store_false")
    g.add_argument("-v", "--verbose", action="store_true")
    return p


def _serve_argv(args, batch_size: int) -> list[str]:
    argv = [
        "--task",
        args.task,
        "--engine",
        args.engine,
        "--precision",
        args.precision,
        "--attn",
        args.attn,
        "--hw",
        args.hw,
        "--weights",
        args.weights,
        "--seed",
        str(args.seed),
        "--max-batch-size",
        str(batch_size),
        "--max-batch-tokens",
        str(args.max_batch_tokens),
        "--max-queue-delay-ms",
        str(args.max_queue_delay_ms),
        "--max-queue",
        str(args.max_queue),
        "--max-request-inputs",
        str(max(args.max_request_inputs, max(args.inputs_per_request))),
        "--artifacts-dir",
        args.artifacts_dir,
        "--truncate",
        "--fake-latency-ms",
        str(args.fake_latency_ms),
        "--fake-per-input-ms",
        str(args.fake_per_input_ms),
    ]
    for flag, value in (
        ("--model", args.model),
        ("--model-path", args.model_path),
        ("--max-seq-len", args.max_seq_len),
        ("--variant", args.variant),
        ("--provider", args.provider),
        ("--artifact", args.artifact),
        ("--price-per-hour", args.price_per_hour),
        ("--threads", args.threads),
        ("--min-pixels", args.min_pixels),
        ("--max-pixels", args.max_pixels),
        ("--max-image-pixels", args.max_image_pixels),
    ):
        if value not in (None, ""):
            argv += [flag, str(value)]
    if args.compile_mode != "default":
        argv += ["--compile-mode", args.compile_mode]
    if args.skip_parity:
        argv.append("--skip-parity")
    if args.fifo:
        argv.append("--fifo")
    return argv


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = build_parser().parse_args(argv)
    console = Console(width=None if Console().is_terminal else 160)
    _setup_logging(Console(stderr=True, width=160), args.verbose)
    try:
        if args.engine == "triton":
            from harness import triton_sweep

            return triton_sweep.run(args, console)
        return _sweep(args, console)
    except BillionbenchError as e:
        print_error(Console(stderr=True, width=160), e)
        return 2
    except KeyboardInterrupt:
        console.print(
            f"[yellow]interrupted[/]: measured points are in {args.output_dir}/"
            "results.csv; run the same command again to resume"
        )
        return 130


def _sweep(args, console) -> int:
    from dataclasses import asdict

    from harness.load import Target, measure_ceiling, run_closed_loop, run_open_loop
    from harness.results import ResultsStore, config_key, context_columns
    from harness.run import load_setup

    if args.vus_start < 1 or args.vus_max < args.vus_start:
        raise ConfigError("--vus-start must be >= 1 and <= --vus-max")
    if args.repeats < 1 or args.iterations < 1:
        raise ConfigError("--repeats and --iterations must be >= 1")
    setup = load_setup(args)
    spec, profile, detected, engine_cfg = (
        setup.spec,
        setup.profile,
        setup.detected,
        setup.engine_cfg,
    )
    wl_spec, workload, flops, peak = setup.wl_spec, setup.workload, setup.flops, setup.peak
    stats = workload.stats
    ceiling = None if args.no_ceiling else measure_ceiling(duration_s=3.0)
    store = ResultsStore(args.output_dir, fresh=not args.resume)
    done = store.read()
    console.print(
        f"[bold]billionbench sweep[/] · {spec.name} · engine {args.engine} {args.precision} · "
        f"hw {profile.name} = {detected.device_name} at ${profile.price_per_hour}/hr · "
        f"workload {workload.source} (avg {stats.avg:.1f} tokens)"
        + (f" · load generator ceiling {ceiling:,.0f} req/s" if ceiling else ""),
        highlight=False,
    )
    rows: list[dict] = []
    started = time.monotonic()
    n_points = 0
    for bs in args.batch_sizes:
        server = None
        url = args.url
        if not url:
            server = ServerProcess(_serve_argv(args, bs), free_port())
            with console.status(f"starting the server (max batch {bs}) ..."):
                server.start()
            url = server.url
        try:
            meta = server.get_json(f"/v2/models/{spec.name}") if server else {}
            info = meta.get("parameters", {})
            target = Target(
                url=url,
                protocol=args.protocol,
                model=args.served_model or spec.name,
                task=spec.task,
                dim=spec.dim if spec.task != "classification" else None,
                normalized=spec.normalize,
                labels=spec.labels,
            )
            for ipr in args.inputs_per_request:
                search = Search(args.vus_start, args.vus_max, args.improvement)

                def measure(
                    vus: int, _bs=bs, _ipr=ipr, _target=target, _info=info, _server=server
                ) -> list[float]:
                    nonlocal n_points
                    thr = []
                    for rep in range(args.repeats):
                        key_cfg = {
                            "mode": "http",
                            "engine": engine_cfg.as_dict(),
                            "hw": profile.name,
                            "price": profile.price_per_hour,
                            "workload": asdict(wl_spec),
                            "server_batch_size": _bs,
                            "inputs_per_request": _ipr,
                            "vus": vus,
                            "repeat": rep,
                            "iterations": args.iterations,
                            "url": args.url,
                            "protocol": args.protocol,
                            "max_duration": args.max_duration,
                            "rate": args.rate,
                            "batcher": {
                                "tokens": args.max_batch_tokens,
                                "delay_ms": args.max_queue_delay_ms,
                                "fifo": args.fifo,
                            },
                        }
                        key = config_key(key_cfg)
                        prev = done[done["config_key"] == key] if "config_key" in done else None
                        if prev is not None and len(prev):
                            row = prev.iloc[-1].to_dict()
                            log.info(
                                "b%d ipr%d vus%d #%d: already measured (resume)",
                                _bs,
                                _ipr,
                                vus,
                                rep,
                            )
                        else:
                            elapsed = time.monotonic() - started
                            eta = (
                                (elapsed / n_points) * max(0, _estimate(args) - n_points)
                                if n_points
                                else 0
                            )
                            console.print(
                                f"  batch {_bs} · {_ipr} inputs/request · {vus} VUs · "
                                f"run {rep + 1}/{args.repeats} (ETA ~{eta / 60:.1f} min)",
                                highlight=False,
                            )
                            tokens0 = _server.tokens() if _server else None
                            if args.rate:
                                res = run_open_loop(
                                    _target,
                                    workload,
                                    rate=args.rate,
                                    duration_s=args.max_duration,
                                    inputs_per_request=_ipr,
                                    max_concurrency=vus,
                                    ceiling_rps=ceiling,
                                )
                                console.print(
                                    f"    open loop at {args.rate:g} req/s: {res.late_requests} "
                                    f"sent late (max {res.max_late_ms:.1f} ms)",
                                    highlight=False,
                                )
                            else:
                                res = run_closed_loop(
                                    _target,
                                    workload,
                                    vus=vus,
                                    iterations=args.iterations,
                                    max_duration_s=args.max_duration,
                                    inputs_per_request=_ipr,
                                    ceiling_rps=ceiling,
                                )
                            n_points += 1
                            row = res.to_row()
                            pad = None
                            if _server:  # this point's padding, not the server's lifetime
                                (u0, p0), (u1, p1) = tokens0, _server.tokens()
                                pad = 1 - (u1 - u0) / (p1 - p0) if p1 > p0 else None
                            row.update(
                                context_columns(
                                    spec=spec,
                                    engine_cfg=engine_cfg,
                                    info=_info,
                                    profile=profile,
                                    detected=detected,
                                    workload=workload,
                                    flops=flops,
                                    peak=peak,
                                    inputs_per_sec=res.throughput.avg,
                                    parity_metric=_info.get("parity_metric"),
                                ),
                                batch_size=_bs,
                                server_batch_size=_bs,
                                vendor="local" if _server else "remote",
                                n_models=1,
                                repeat=rep,
                                padding_ratio=pad,
                                config_key=key,
                                config_json=json.dumps(
                                    {**key_cfg, "errors": res.errors}, sort_keys=True, default=str
                                ),
                            )
                            store.append(row)
                        rows.append(row)
                        thr.append(float(row["throughput_req_per_sec"] or 0.0))
                    return thr

                if args.rate:  # open loop: one point per group, concurrency capped at vus-max
                    measure(args.vus_max)
                    continue
                best = search.run(measure)
                console.print(
                    f"batch {bs} · {ipr} inputs/request: best {best} VUs at "
                    f"{search.thr(best):,.1f} inputs/s (noise margin "
                    f"{search.margin:.1%}; measured VUs {sorted(search.points)})",
                    highlight=False,
                )
        finally:
            if server:
                server.stop()
    _report(console, args, store, rows)
    from harness.report import report_for_run

    report_for_run(console, args.output_dir, max_p95_ms=args.max_p95_ms, max_p99_ms=args.max_p99_ms)
    return 0


def _estimate(args) -> int:
    """Rough number of runs a sweep makes, for the time-left estimate."""
    import math

    doublings = int(math.log2(max(args.vus_max // args.vus_start, 1))) + 1
    return len(args.batch_sizes) * len(args.inputs_per_request) * (doublings + 2) * args.repeats


def _report(console, args, store, rows) -> None:
    import pandas as pd
    from rich.table import Table

    from harness import checks

    if not rows:
        console.print("no points measured")
        return
    df = pd.DataFrame(rows)
    df = df.sort_values("1B_cost")
    t = Table(
        title="HTTP sweep (latency = end to end per request; throughput = inputs/s)",
        title_justify="left",
    )
    for head in (
        "batch",
        "inputs/req",
        "VUs",
        "inputs/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "failed",
        "invalid",
        "pad frac",
        "$/1B",
    ):
        t.add_column(head, justify="right")
    for r in df.head(15).to_dict("records"):
        pad = r.get("padding_ratio")
        t.add_row(
            str(r["batch_size"]),
            str(r["inputs_per_request"]),
            str(r["vus"]),
            f"{r['throughput_req_per_sec']:,.1f}",
            f"{r['p50_latency_ms']:,.1f}",
            f"{r['p95_latency_ms']:,.1f}",
            f"{r['p99_latency_ms']:,.1f}",
            str(r["failed_requests"]),
            str(r["invalid_embeddings"]),
            "-" if pad is None or pd.isna(pad) else f"{pad:.2f}",
            f"{r['1B_cost']:,.2f}",
        )
    console.print(t)
    best = df.iloc[0]
    console.print(
        f"[bold]best[/]: ${best['1B_cost']:,.2f} per 1B inputs · batch "
        f"{best['batch_size']} · {best['inputs_per_request']} inputs/request · "
        f"{best['vus']} VUs · p95 {best['p95_latency_ms']:,.1f} ms",
        highlight=False,
    )
    for col, limit in (("p95_latency_ms", args.max_p95_ms), ("p99_latency_ms", args.max_p99_ms)):
        if limit:
            ok = df[pd.to_numeric(df[col], errors="coerce") <= limit]
            if ok.empty:
                console.print(f"no point meets {col} <= {limit} ms", highlight=False)
            else:
                b = ok.iloc[0]
                console.print(
                    f"[bold]best with {col} <= {limit:g} ms[/]: ${b['1B_cost']:,.2f} "
                    f"per 1B · batch {b['batch_size']} · {b['vus']} VUs · "
                    f"{col} {b[col]:,.1f} ms",
                    highlight=False,
                )
    found = checks.run_all(df)
    console.print("[bold]sanity checks[/]")
    checks.print_checks(console, found)
    checks.save(found, os.path.join(args.output_dir, "checks.json"))
    console.print(
        f"results: {store.csv} · checks: {os.path.join(args.output_dir, 'checks.json')}",
        highlight=False,
    )


if __name__ == "__main__":
    sys.exit(main())
