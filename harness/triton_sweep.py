"""`python -m harness.sweep --engine triton`: Model Analyzer's brute search, through real Triton.

Instance count x encoder max_batch_size x dynamic batching (off, or on with a queue delay), each
at a range of concurrencies. One tritonserver runs for the whole sweep in explicit model-control
mode; every configuration is written into a working copy of the repository and reloaded through
the repository API. Every measured point is a result row (resumable); outputs are validated by
our load generator, so a model that answers with empty tensors cannot post good numbers.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engines.errors import ConfigError

log = logging.getLogger("billionbench")

DIMENSIONS = ("instances", "max_batch", "delay")


@dataclass(frozen=True)
class Point:
    instances: int
    max_batch: int
    delay_us: int | None  # None: dynamic batching off

    @property
    def dynamic(self) -> bool:
        return self.delay_us is not None

    def label(self) -> str:
        dyn = f"dyn {self.delay_us} us" if self.dynamic else "no dyn"
        return f"{self.instances} inst · max batch {self.max_batch} · {dyn}"


def parse_delays(text: str) -> list[int | None]:
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
    return out


def grid(args) -> list[Point]:
    """The brute-force grid; dimensions not in --search keep their first value."""
    search = {s.strip() for s in args.search.split(",") if s.strip()}
    unknown = search - set(DIMENSIONS)
    if unknown:
        raise ConfigError(
            f"--search takes {', '.join(DIMENSIONS)}; got {', '.join(sorted(unknown))}"
        )
    instances = args.instances if "instances" in search else args.instances[:1]
    batches = args.max_batch if "max_batch" in search else args.max_batch[:1]
    delays = parse_delays(args.queue_delays_us)
    delays = delays if "delay" in search else delays[:1]
    client = max(args.inputs_per_request)
    small = [b for b in batches if b < client]
    if small:
        raise ConfigError(
            f"--max-batch {small[0]} is below --inputs-per-request {client}: Triton would refuse "
            "the requests; raise --max-batch or lower --inputs-per-request"
        )
    if any(i < 1 for i in instances):
        raise ConfigError("--instances must be >= 1")
    return [Point(i, b, d) for i, b, d in itertools.product(instances, batches, delays)]


def run(args, console) -> int:
    from engines.triton import counters, stats_delta
    from engines.tritonserver import TritonServer
    from exporters.api import artifact_dir, ensure_artifact
    from exporters.base import ExportConfig
    from exporters.triton import (
        ENCODER,
        TritonExporter,
        TritonOptions,
        repository_models,
        set_encoder_serving,
    )
    from harness.load import Target, measure_ceiling, run_closed_loop
    from harness.results import ResultsStore, config_key, context_columns
    from harness.run import load_setup

    points = grid(args)
    concurrency = sorted(set(args.concurrency))
    if concurrency[0] < 1:
        raise ConfigError("--concurrency must be >= 1")
    setup = load_setup(args)
    spec, profile, detected, engine_cfg = (
        setup.spec,
        setup.profile,
        setup.detected,
        setup.engine_cfg,
    )
    wl_spec, workload, max_len = setup.wl_spec, setup.workload, setup.max_len
    flops, peak = setup.flops, setup.peak
    stats = workload.stats
    client_max = max(args.inputs_per_request)

    # the repository: exported (parity-gated) once, then a working copy the sweep rewrites
    base = ExportConfig(
        model=spec.name,
        format="triton",
        out="",
        precision=args.precision,
        variant=args.variant or "python",
        device=profile.device,
        hw=profile.name,
        weights=args.weights,
        model_path=args.model_path,
        seed=args.seed,
        seq_range=(8, min(128, max_len), max_len),
    )
    from dataclasses import replace

    base = replace(base, out=args.artifact or str(artifact_dir(args.artifacts_dir, base)))
    first = TritonOptions(
        backend=base.variant,
        max_batch_size=max(p.max_batch for p in points),
        client_max_batch=client_max,
        gpu=profile.device == "cuda",
    )
    if args.artifact:  # the user's repository is verified, never overwritten
        from engines.artifact import verify

        manifest = verify(args.artifact, {"format": "triton", "model": spec.name})
        base = replace(base, variant=manifest.details.get("backend", base.variant))
    else:
        with console.status(f"preparing the Triton repository {base.out} ..."):
            manifest, _ = ensure_artifact(base, TritonExporter(first))
    parity = manifest.parity or {}
    if parity.get("passed") is not True and not args.skip_parity:
        from engines.errors import ArtifactRefused

        raise ArtifactRefused(
            f"repository {base.out} did not pass parity ({parity}); re-export it or pass "
            "--skip-parity"
        )
    work = Path(args.output_dir) / "triton-repository"
    shutil.rmtree(work, ignore_errors=True)
    work.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(base.out, work)
    repository_models(work)  # every config parses before the server starts

    ceiling = None if args.no_ceiling else measure_ceiling(duration_s=3.0)
    store = ResultsStore(args.output_dir, fresh=not args.resume)
    done = store.done_keys()
    info = {
        "weights": manifest.weights,
        "model_source": manifest.model_id,
        "tokenizer": manifest.tokenizer,
        "parity": parity,
    }
    console.print(
        f"[bold]billionbench triton sweep[/] · {spec.name} · {base.variant} encoder · hw "
        f"{profile.name} = {detected.device_name} at ${profile.price_per_hour}/hr · "
        f"{len(points)} configurations x concurrency {concurrency} · workload "
        f"{workload.source} (avg {stats.avg:.1f} tokens) · weights={manifest.weights}",
        highlight=False,
    )
    rows: list[dict] = []
    server = TritonServer(work, models=[spec.name], ready_timeout_s=600)
    with console.status("starting tritonserver ..."):
        server.start()
    console.print(
        f"tritonserver: {server.install.source} at {server.url} (log {server.log_file()})",
        highlight=False,
    )
    target = Target(
        url=server.url,
        protocol="triton",
        model=spec.name,
        task=spec.task,
        dim=spec.dim if spec.task != "classification" else None,
        normalized=spec.normalize,
        labels=spec.labels,
    )
    started = time.monotonic()
    n_done = 0
    total = len(points) * len(concurrency)
    try:
        for point in points:
            keys = {}
            for c in concurrency:
                key_cfg = {
                    "mode": "http",
                    "server": "triton",
                    "engine": engine_cfg.as_dict(),
                    "backend": base.variant,
                    "hw": profile.name,
                    "price": profile.price_per_hour,
                    "workload": asdict(wl_spec),
                    "triton": asdict(point),
                    "concurrency": c,
                    "inputs_per_request": client_max,
                    "iterations": args.iterations,
                    "max_duration": args.max_duration,
                }
                keys[c] = (config_key(key_cfg), key_cfg)
            todo = [c for c in concurrency if keys[c][0] not in done]
            if not todo:
                console.print(f"{point.label()}: already measured (resume)", highlight=False)
                continue
            opts = TritonOptions(
                backend=base.variant,
                max_batch_size=point.max_batch,
                dynamic_batching=point.dynamic,
                max_queue_delay_us=point.delay_us or 0,
                instances=point.instances,
                client_max_batch=client_max,
                gpu=profile.device == "cuda",
            )
            set_encoder_serving(work, opts)
            with console.status(f"reloading the encoder: {point.label()} ..."):
                server.load(ENCODER)
                server.load(spec.name)
            for c in todo:
                key, key_cfg = keys[c]
                eta = (time.monotonic() - started) / n_done * (total - n_done) if n_done else 0
                console.print(
                    f"  {point.label()} · concurrency {c} (ETA ~{eta / 60:.1f} min)",
                    highlight=False,
                )
                before = server.statistics(ENCODER)
                res = run_closed_loop(
                    target,
                    workload,
                    vus=c,
                    iterations=args.iterations,
                    max_duration_s=args.max_duration,
                    inputs_per_request=client_max,
                    ceiling_rps=ceiling,
                )
                after = server.statistics(ENCODER)
                n_done += 1
                row = res.to_row()
                row.update(
                    context_columns(
                        spec=spec,
                        engine_cfg=engine_cfg,
                        info=info,
                        profile=profile,
                        detected=detected,
                        workload=workload,
                        flops=flops,
                        peak=peak,
                        inputs_per_sec=res.throughput.avg,
                        parity_metric=parity.get("metric"),
                    ),
                    image=f"triton/{base.variant}/{args.precision}",
                    batch_size=point.max_batch,
                    server_batch_size=point.max_batch,
                    vendor="triton",
                    n_models=point.instances,
                    repeat=0,
                    triton_instances=point.instances,
                    triton_max_batch=point.max_batch,
                    triton_dynamic_batching=point.dynamic,
                    triton_queue_delay_us=point.delay_us,
                    server_rss_mb=server.rss_mb(),
                    config_key=key,
                    config_json=json.dumps(
                        {**key_cfg, "errors": res.errors, "tritonserver": server.install.source},
                        sort_keys=True,
                        default=str,
                    ),
                )
                row.update(stats_delta(counters(before), counters(after)))
                store.append(row)
                rows.append(row)
                if res.failed_requests:
                    console.print(
                        f"    [yellow]{res.failed_requests} failed / "
                        f"{res.invalid_embeddings} invalid outputs[/]",
                        highlight=False,
                    )
    finally:
        server.stop()
    _table(console, args, store, rows)
    from harness.report import report_for_run

    report_for_run(console, args.output_dir, max_p95_ms=args.max_p95_ms, max_p99_ms=args.max_p99_ms)
    return 0


def _table(console, args, store, rows: list[dict]) -> None:
    """Seed 003's table: concurrency, max batch, dynamic batching, instances, p95, thr, memory."""
    import pandas as pd
    from rich.table import Table

    if not rows:
        df = store.read()
        df = df[df["vendor"] == "triton"] if "vendor" in df else df
        rows = df.to_dict("records")
    if not rows:
        console.print("no points measured")
        return
    df = pd.DataFrame(rows)
    t = Table(
        title="Triton config sweep (latency end to end per request; throughput = inputs/s; "
        "memory = tritonserver + backend stubs RSS)",
        title_justify="left",
    )
    for head in (
        "concurrency",
        "max batch",
        "dynamic batching",
        "instances",
        "p95 ms",
        "p99 ms",
        "inputs/s",
        "avg batch",
        "queue ms",
        "infer ms",
        "memory MiB",
        "failed",
        "$/1B",
    ):
        t.add_column(head, justify="right")

    def f(x, nd=1):
        return "-" if x is None or pd.isna(x) else f"{x:,.{nd}f}"

    for r in df.sort_values(["triton_instances", "triton_max_batch", "vus"]).to_dict("records"):
        dyn = r["triton_queue_delay_us"]
        t.add_row(
            str(r["vus"]),
            str(r["triton_max_batch"]),
            "off" if dyn is None or pd.isna(dyn) else f"on, {int(dyn)} us",
            str(r["triton_instances"]),
            f(r["p95_latency_ms"]),
            f(r["p99_latency_ms"]),
            f(r["throughput_req_per_sec"], 2),
            f(r.get("server_avg_batch"), 2),
            f(r.get("server_queue_ms")),
            f(r.get("server_compute_infer_ms")),
            f(r.get("server_rss_mb"), 0),
            str(r["failed_requests"]),
            f(r["1B_cost"], 2),
        )
    console.print(t)
    ok = df[df["failed_requests"] == 0]
    limit = args.max_p99_ms
    if limit:
        ok = ok[pd.to_numeric(ok["p99_latency_ms"], errors="coerce") <= limit]
    if ok.empty:
        console.print(
            "no configuration without failures" + (f" meets p99 <= {limit:g} ms" if limit else ""),
            highlight=False,
        )
        return
    b = ok.sort_values("1B_cost").iloc[0]
    dyn = b["triton_queue_delay_us"]
    console.print(
        f"[bold]best{f' with p99 <= {limit:g} ms' if limit else ''}[/]: "
        f"${b['1B_cost']:,.2f} per 1B inputs · {b['triton_instances']} instance(s) · max batch "
        f"{b['triton_max_batch']} · dynamic batching "
        f"{'off' if dyn is None or pd.isna(dyn) else f'{int(dyn)} us'} · concurrency {b['vus']} · "
        f"{b['throughput_req_per_sec']:,.2f} inputs/s · p99 {b['p99_latency_ms']:,.1f} ms",
        highlight=False,
    )
    console.print(f"results: {store.csv}", highlight=False)
