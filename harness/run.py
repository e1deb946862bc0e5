"""`python -m harness.run`: benchmark one model x engine x hardware in process (neuronperf-style).

Sweeps batch sizes x n_models x workers_per_model, appends one result row per configuration to
`<output-dir>/results.{csv,parquet}` as soon as it is measured, and prints seed 002's table with
$/1M, $/1B and the roofline floor. Re-running the same command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass
from typing import Any

from engines.base import (
    ATTENTIONS,
    COMPILE_MODES,
    PRECISIONS,
    PROVIDERS,
    EngineConfig,
    check_task,
)
from engines.errors import BillionbenchError, ConfigError
from engines.models import DEFAULT_MODEL, MODELS, TASKS, WEIGHTS, get_spec
from engines.registry import ENGINES, engine_class
from harness.costs import cost_per_1m_tokens

log = logging.getLogger("billionbench")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        self.exit(2, f"error: {message} (see: python -m {self.prog} --help)\n")


def print_error(console, error: object) -> None:
    """The CLIs' one-line error: no traceback, never wrapped."""
    from rich.markup import escape

    # escaped: rich would eat `[vision]` in 'pip install -e ".[vision]"' as a style tag
    console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Model, engine and hardware flags shared by harness.run, harness.serve and harness.sweep."""
    from harness.hardware import PROFILES

    g = p.add_argument_group("model")
    g.add_argument("--task", choices=TASKS, default="classification", help="what the model does")
    g.add_argument(
        "--model",
        default=None,
        help=f"registry name; default: the task's model {DEFAULT_MODEL}. "
        f"Known: {', '.join(sorted(MODELS))}",
    )
    g.add_argument("--model-path", default=None, help="load weights/tokenizer from this directory")
    g.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="auto",
        help="auto: local dir > HF cache > Hub > random (labelled); random: never fetch",
    )
    g.add_argument(
        "--max-seq-len",
        type=int,
        default=None,
        help="truncate inputs to this many tokens (default: the model's limit)",
    )
    g.add_argument("--seed", type=int, default=0, help="workload and random-weight seed")
    g = p.add_argument_group("engine")
    g.add_argument("--engine", default="eager", help=f"one of: {', '.join(ENGINES)}")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32")
    g.add_argument("--attn", choices=ATTENTIONS, default="sdpa", help="attention implementation")
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice, usually all cores)",
    )
    g.add_argument(
        "--variant",
        default="",
        help="artifact variant: 'optimized' (ONNX fusions); for --engine triton the encoder "
        "backend of the repository it writes (python | onnxruntime | pytorch | tensorrt)",
    )
    g.add_argument(
        "--triton-url",
        default=None,
        help="--engine triton: a running Triton (http://host:8000, or host:8001 with --transport "
        "grpc); default: serve the exported repository with the bundled tritonserver",
    )
    g.add_argument(
        "--transport", choices=("http", "grpc"), default=None, help="tritonclient transport"
    )
    g.add_argument(
        "--provider",
        choices=PROVIDERS,
        default=None,
        help="onnx engine: ONNX Runtime execution provider (default: cpu on CPU, cuda on GPU)",
    )
    g.add_argument(
        "--compile-mode", choices=COMPILE_MODES, default="default", help="compile engine: mode"
    )
    g.add_argument(
        "--artifact", default=None, help="use this artifact folder instead of exporting on demand"
    )
    g.add_argument(
        "--artifacts-dir", default="artifacts", help="cache of on-demand exports, reused if valid"
    )
    g.add_argument(
        "--skip-parity",
        action="store_true",
        help="benchmark an artifact that failed (or skipped) the parity gate",
    )
    g.add_argument(
        "--fake-latency-ms",
        type=float,
        default=2.0,
        help="fake engine only: fixed latency per call",
    )
    g.add_argument(
        "--fake-per-input-ms",
        type=float,
        default=0.2,
        help="fake engine only: extra latency per input in the batch",
    )
    g = p.add_argument_group("hardware and cost")
    g.add_argument(
        "--hw",
        default="auto",
        help=f"hardware profile; must match this machine. auto or one of: {', '.join(PROFILES)}",
    )
    g.add_argument(
        "--price-per-hour",
        type=positive_float,
        default=None,
        help="override the profile's $/hr (recorded as the price source)",
    )
    g = p.add_argument_group("vision models (--task vision-embedding)")
    g.add_argument(
        "--min-pixels", type=int, default=None, help="image processor: resize up to at least this"
    )
    g.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="image processor: resize down to at most this (default 768*28*28: 768 visual tokens)",
    )
    g.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        help="refuse decoded images larger than this (default 40,000,000)",
    )


def add_workload_args(p: argparse.ArgumentParser) -> None:
    """Workload flags shared by harness.run and harness.sweep."""
    g = p.add_argument_group("workload")
    g.add_argument(
        "--dataset",
        default="auto",
        help="auto (seed dataset when the Hub is reachable, else synthetic), "
        "synthetic, a .jsonl/.csv/.parquet file, or a Hub dataset id",
    )
    g.add_argument("--text-column", default=None)
    g.add_argument("--label-column", default=None)
    g.add_argument("--num-samples", type=int, default=512, help="distinct inputs in the workload")
    g.add_argument(
        "--tokens-mean",
        type=float,
        default=None,
        help="synthetic: mean tokens per input (default 100 classification, 144 embedding)",
    )
    g.add_argument(
        "--tokens-sd",
        type=float,
        default=None,
        help="synthetic: sd of tokens (default: min+gamma tail / 14 for embedding)",
    )
    g.add_argument("--tokens-min", type=int, default=None, help="synthetic: minimum tokens")
    g.add_argument(
        "--image-sizes",
        default="600x400",
        help="vision, synthetic pages: WxH[,WxH...] drawn uniformly (seed 000: ~600x400)",
    )
    g.add_argument("--image-column", default=None, help="vision: image column (default image)")


def workload_spec(args: argparse.Namespace):
    from harness.workloads import WorkloadSpec

    if args.num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1; got {args.num_samples}")
    return WorkloadSpec(
        task=args.task,
        source=args.dataset,
        n=args.num_samples,
        tokens_mean=args.tokens_mean,
        tokens_sd=args.tokens_sd,
        tokens_min=args.tokens_min,
        text_column=args.text_column,
        label_column=args.label_column,
        seed=args.seed,
        **_vision_workload(args),
    )


def _vision_workload(args: argparse.Namespace) -> dict[str, Any]:
    if args.task != "vision-embedding":
        return {}
    from harness.workloads import parse_sizes

    return dict(
        image_sizes=parse_sizes(args.image_sizes),
        image_column=args.image_column,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="harness.run",
        description="Benchmark an encoder in process (model copies x worker threads x batch "
        "sizes) and report p50/p99 latency, throughput and $ per 1M / 1B inputs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_args(p)
    add_workload_args(p)
    g = p.add_argument_group("sweep (neuronperf-style)")
    g.add_argument("--batch-sizes", type=int_list, default=[1, 8, 32], help="comma-separated")
    g.add_argument("--n-models", type=int_list, default=[1], help="model copies, comma-separated")
    g.add_argument(
        "--workers-per-model",
        type=int_list,
        default=[1],
        help="threads feeding each copy, comma-separated",
    )
    g.add_argument(
        "--processes", action="store_true", help="run model copies as processes instead of threads"
    )
    g.add_argument(
        "--duration",
        type=positive_float,
        default=5.0,
        help="minimum timed seconds per configuration",
    )
    g.add_argument(
        "--min-calls",
        type=int,
        default=10,
        help="minimum timed calls per configuration (both minima must be met)",
    )
    g.add_argument("--warmup", type=int, default=2, help="untimed warm-up calls per model copy")
    g.add_argument(
        "--load",
        choices=("inprocess", "perf_analyzer"),
        default="inprocess",
        help="perf_analyzer (with --engine triton): drive the ensemble with NVIDIA's "
        "perf_analyzer over --concurrency, after checking a sample of responses ourselves",
    )
    g.add_argument(
        "--concurrency", type=int_list, default=[1, 2, 4, 8], help="perf_analyzer concurrencies"
    )
    g.add_argument(
        "--max-duration",
        type=positive_float,
        default=None,
        help="hard stop per configuration (default 10 x duration + 120 s)",
    )
    g = p.add_argument_group("output")
    g.add_argument("--output-dir", default="results", help="where results.csv/.parquet go")
    r = g.add_mutually_exclusive_group()
    r.add_argument(
        "--resume",
        dest="resume",
        action="store_true",
        default=True,
        help="skip configurations already in the results file",
    )
    r.add_argument(
        "--fresh",
        dest="resume",
        action="store_false",
        help="start over (old results are kept, renamed with a timestamp)",
    )
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _setup_logging(console, verbose: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
    # third-party libraries speak at WARNING and up; ours at INFO (DEBUG with -v)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler], force=True)
    for ours in ("billionbench", "engines", "exporters", "harness"):
        logging.getLogger(ours).setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("transformers", "urllib3", "filelock", "huggingface_hub", "datasets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{nd}f}" if abs(v) >= 0.01 or v == 0 else f"{v:.2e}"
    return str(v)


def print_table(console, rows: list[dict]) -> None:
    from rich.table import Table

    t = Table(
        title="in-process results (latency_ms_* = forward only; e2e = tokenize+forward+post)",
        title_justify="left",
    )
    cols = [
        ("batch_size", "batch", 0),
        ("n_models", "n_models", 0),
        ("workers_per_model", "workers/model", 0),
        ("latency_ms_p50", "fwd p50 ms", 2),
        ("latency_ms_p99", "fwd p99 ms", 2),
        ("p99_latency_ms", "e2e p99 ms", 2),
        ("throughput_avg", "inputs/s", 1),
        ("padding_ratio", "pad frac", 2),
        ("cost_per_1m_inf", "$/1M", 3),
        ("1B_cost", "$/1B", 2),
        ("floor_1B_cost", "floor $/1B", 2),
        ("efficiency", "efficiency", 3),
    ]
    for _, head, _ in cols:
        t.add_column(head, justify="right")
    for r in rows:
        t.add_row(*(_fmt(r.get(k), nd) for k, _, nd in cols))
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = build_parser().parse_args(argv)
    console = Console(stderr=False)
    if not console.is_terminal:  # logs and CI: do not squeeze the table into 80 columns
        console = Console(stderr=False, width=160)
    err_console = Console(stderr=True, width=None if console.is_terminal else 160)
    _setup_logging(err_console, args.verbose)
    try:
        if args.load == "perf_analyzer":
            from harness.perf_analyzer import run_harness

            return run_harness(args, console)
        return _run(args, console)
    except BillionbenchError as e:
        print_error(err_console, e)
        return 2
    except OSError as e:
        print_error(err_console, e)
        return 1
    except KeyboardInterrupt:
        err_console.print(
            f"[yellow]interrupted[/]: finished rows are in {args.output_dir}/results.csv; "
            "run the same command again to resume"
        )
        return 130


def resolve_setup(args: argparse.Namespace):
    """Validate model/engine/hardware flags; return (spec, engine_cls, profile, detected, cfg)."""
    from harness import hardware

    model = args.model or DEFAULT_MODEL[args.task]
    spec = get_spec(model)
    if spec.task != args.task:
        raise ConfigError(
            f"--model {model} is a {spec.task} model but --task is {args.task}; "
            f"pass --task {spec.task} or pick a {args.task} model"
        )
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1; got {args.threads}")
    engine_cls = engine_class(args.engine)  # unknown / not-yet-built engines fail here
    check_task(args.engine, engine_cls, spec)

    detected = hardware.detect()
    profile = hardware.resolve(args.hw, detected, args.price_per_hour)
    _check_engine_here(args.engine, engine_cls, profile, detected)
    hardware.check_options(profile, args.precision, args.attn)
    engine_cfg = EngineConfig(
        engine=args.engine,
        model=model,
        precision=args.precision,
        attn=args.attn,
        device=profile.device,
        weights=args.weights,
        model_path=args.model_path,
        max_seq_len=args.max_seq_len,
        seed=args.seed,
        fake_latency_ms=args.fake_latency_ms,
        fake_per_input_ms=args.fake_per_input_ms,
        variant=args.variant,
        provider=args.provider,
        compile_mode=args.compile_mode,
        url=args.triton_url,
        transport=args.transport,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        max_image_pixels=args.max_image_pixels,
    )
    engine_cls.preflight(engine_cfg)
    return spec, engine_cls, profile, detected, engine_cfg


@dataclass
class Setup:
    """What every benchmark command resolves before measuring: flags, workload, roofline."""

    spec: Any
    engine_cls: Any
    profile: Any
    detected: Any
    engine_cfg: Any
    wl_spec: Any
    tokenizer: Any  # engines.models.LoadedTokenizer
    workload: Any
    max_len: int
    flops: float | None  # useful FLOPs per input; None for engines that compute nothing
    peak: float | None  # FLOP/s: measured on CPU, the profile's datasheet figure elsewhere


def load_setup(args: argparse.Namespace) -> Setup:
    """resolve_setup + tokenizer + workload + FLOPs per input + peak, shared by the CLIs."""
    from engines.models import load_tokenizer
    from harness import hardware
    from harness.workloads import load_workload

    spec, engine_cls, profile, detected, engine_cfg = resolve_setup(args)
    wl_spec = workload_spec(args)
    tok = load_tokenizer(spec, args.model_path)
    max_len = args.max_seq_len or spec.max_seq_len
    workload = load_workload(wl_spec, tok.tokenizer, max_len)
    if workload.truncated:
        log.warning(
            "%d inputs are longer than %d tokens and will be truncated", workload.truncated, max_len
        )
    stats = workload.stats
    # the fake engine computes nothing, so no FLOPs, floor or efficiency is claimed for it
    computes = engine_cls.computes_model
    flops = (
        spec.flops_per_input(stats.avg, stats.mean_sq, **workload.flop_args) if computes else None
    )
    peak = (
        hardware.measured_cpu_peak(args.precision)
        if profile.device == "cpu" and computes
        else profile.peak_flops(args.precision)
    )
    return Setup(
        spec,
        engine_cls,
        profile,
        detected,
        engine_cfg,
        wl_spec,
        tok,
        workload,
        max_len,
        flops,
        peak,
    )


def _run(args: argparse.Namespace, console) -> int:
    from harness.inprocess import InprocessConfig, run_inprocess
    from harness.results import ResultsStore, config_key

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    setup = load_setup(args)
    spec, engine_cls, profile, detected, engine_cfg = (
        setup.spec,
        setup.engine_cls,
        setup.profile,
        setup.detected,
        setup.engine_cfg,
    )
    model = spec.name
    wl_spec, tok, workload, max_len = setup.wl_spec, setup.tokenizer, setup.workload, setup.max_len
    flops, peak, peak_source = setup.flops, setup.peak, profile.peak_source
    stats = workload.stats
    store = ResultsStore(args.output_dir, fresh=not args.resume)
    done = store.done_keys()
    parity_metric = None
    if engine_cls.artifact_format and not engine_cfg.url:
        batches = sorted(set(args.batch_sizes))
        lo = min(8, stats.min)
        image_buckets: tuple = ()
        if spec.task == "vision-embedding" and engine_cls.artifact_format == "onnx":
            from harness.workloads import workload_buckets

            image_buckets = workload_buckets(
                workload.texts, engine_cfg.pixel_budget(), args.batch_sizes
            )
        engine_cfg, parity_metric = prepare_artifact(
            args,
            engine_cls.artifact_format,
            engine_cfg,
            profile,
            batch_range=(batches[0], batches[len(batches) // 2], batches[-1]),
            seq_range=(lo, max(lo, min(int(stats.p50), max_len)), max_len),
            console=console,
            image_buckets=image_buckets,
        )

    console.print(
        f"[bold]billionbench[/] · model [cyan]{model}[/] ({spec.hub_id or 'config only'}) · "
        f"engine [cyan]{args.engine}[/] {args.precision}/{args.attn} · hw [cyan]{profile.name}[/] "
        f"= {detected.device_name} at ${profile.price_per_hour}/hr ({profile.price_source}, "
        f"{profile.price_date})",
        highlight=False,
    )
    console.print(
        f"workload: {workload.source}, tokenizer {tok.source}; tokens/input avg {stats.avg:.1f} "
        f"p50 {stats.p50:.0f} min {stats.min} max {stats.max} · "
        f"{(flops or 0) / 1e9:.2f} GFLOP/input · peak "
        + (f"{peak / 1e12:.2f} TFLOP/s ({peak_source})" if peak else "not measured"),
        highlight=False,
    )
    if workload.visual_tokens is not None:
        console.print(
            f"images: {workload.pixels.mean():,.0f} pixels avg, "
            f"{workload.visual_tokens.mean():.1f} visual tokens avg "
            f"(min/max pixels {engine_cfg.pixel_budget().min_pixels:,}/"
            f"{engine_cfg.pixel_budget().max_pixels:,}), skipped {workload.skipped}",
            highlight=False,
        )
    if args.engine == "fake":
        console.print(
            "[yellow]engine=fake: synthetic latencies for tests/demos, not a model measurement[/]"
        )

    points = [
        (b, n, w) for n in args.n_models for w in args.workers_per_model for b in args.batch_sizes
    ]
    rows: list[dict] = []
    engines: list = []
    existing = None
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            overall = bar.add_task(f"{len(points)} configurations", total=len(points), info="")
            for b, n, w in points:
                icfg = InprocessConfig(
                    batch_size=b,
                    n_models=n,
                    workers_per_model=w,
                    duration_s=args.duration,
                    min_calls=args.min_calls,
                    warmup_calls=args.warmup,
                    max_duration_s=args.max_duration,
                    processes=args.processes,
                )
                key_cfg = {
                    "mode": "inprocess",
                    "engine": engine_cfg.as_dict(),
                    "hw": profile.name,
                    "price_per_hour": profile.price_per_hour,
                    "workload": asdict(wl_spec),
                    "inprocess": asdict(icfg),
                    "threads": args.threads,
                }
                key = config_key(key_cfg)
                if key in done:
                    if existing is None:
                        existing = store.read()
                    prev = existing[existing["config_key"] == key].tail(1).to_dict("records")
                    rows += prev
                    log.info(
                        "batch %d, n_models %d, workers %d: already measured (resume); "
                        "--fresh to redo",
                        b,
                        n,
                        w,
                    )
                    bar.advance(overall)
                    continue
                bar.update(
                    overall,
                    description=f"batch {b} · n_models {n} · workers {w}",
                    info="loading" if not engines else "measuring",
                )

                def progress(elapsed: float, calls: int, _b=b) -> None:
                    bar.update(overall, info=f"{elapsed:5.1f}s/{args.duration:g}s · {calls} calls")

                res = run_inprocess(
                    engine_cfg,
                    workload,
                    icfg,
                    engines=None if args.processes else engines,
                    progress=progress,
                )
                row = _row(
                    parity_metric,
                    res,
                    spec,
                    engine_cfg,
                    profile,
                    detected,
                    workload,
                    flops,
                    peak,
                    key,
                    key_cfg,
                )
                store.append(row)
                rows.append(row)
                bar.advance(overall)
    finally:
        for e in engines:
            e.close()
    print_table(console, rows)
    weights = rows[0].get("weights") if rows else "?"
    console.print(
        f"weights={weights} · results: {store.csv} and {store.parquet} · cost = "
        f"${profile.price_per_hour}/hr x 1e9 / (3600 x inputs/s); floor = FLOPs/input at peak",
        highlight=False,
    )
    console.print(
        "next: compare exports (--engine onnx --variant optimized --precision int8, "
        "--engine compile, --engine aoti, --engine triton), model copies (--n-models 1,2), "
        "HTTP with python -m harness.sweep, or merge runs with python -m harness.report",
        highlight=False,
    )
    if weights == "random":
        console.print(
            "[yellow]weights=random: latency/throughput are valid for the "
            "architecture; predictions are meaningless[/]"
        )
    from harness.report import report_for_run

    report_for_run(console, args.output_dir)
    return 0


def _check_engine_here(name, engine_cls, profile, detected) -> None:
    """Fail fast, in one line, when the engine's hardware or libraries are not here."""
    import importlib.util

    from engines.errors import HardwareMismatch, MissingDependency

    missing = [(m, x) for m, x in engine_cls.requires if importlib.util.find_spec(m) is None]
    hint = f"; {engine_cls.install_hint}" if engine_cls.install_hint else ""
    if profile.device not in engine_cls.devices:
        also = ""
        if missing:
            also = f" and {', '.join(m for m, _ in missing)} is not installed"
        raise HardwareMismatch(
            f"--engine {name} runs on {'/'.join(engine_cls.devices)}, but this machine is "
            f"{detected.describe()}{also}{hint}"
        )
    if missing:
        raise MissingDependency(missing[0][0], missing[0][1])


def prepare_artifact(
    args, fmt, engine_cfg, profile, *, batch_range, seq_range, console, image_buckets=()
):
    """Reuse or export the artifact an engine runs, and apply the parity gate.

    `image_buckets`: the fixed (batch, grid h, grid w) buckets a vision ONNX run needs.
    """
    from dataclasses import replace

    from engines.artifact import verify
    from engines.errors import ArtifactRefused
    from exporters.api import artifact_dir, ensure_artifact, expectation, holds_buckets
    from exporters.base import ExportConfig

    cfg = ExportConfig(
        model=engine_cfg.model,
        format=fmt,
        out=args.artifact or "",
        precision=engine_cfg.precision,
        variant=engine_cfg.variant,
        device=profile.device,
        hw=profile.name,
        weights=engine_cfg.weights,
        model_path=engine_cfg.model_path,
        seed=engine_cfg.seed,
        batch_range=batch_range,
        seq_range=seq_range,
        image_buckets=tuple(image_buckets),
    )
    if not args.artifact:
        cfg = replace(cfg, out=str(artifact_dir(args.artifacts_dir, cfg)))
    if args.artifact:  # the user's folder is verified, never overwritten
        manifest, reused = verify(cfg.out, expectation(cfg)), True
        if image_buckets and not holds_buckets(manifest, image_buckets):
            from engines.vision import describe_buckets

            raise ArtifactRefused(
                f"artifact {cfg.out} lacks image buckets this run needs "
                f"({describe_buckets(image_buckets)}); export them with python -m exporters "
                "--format onnx --image-buckets ..."
            )
    else:
        with console.status(f"preparing the {fmt} artifact in {cfg.out} ..."):
            manifest, reused = ensure_artifact(cfg)
    parity = manifest.parity or {}
    verdict = {True: "passed", False: "FAILED"}.get(parity.get("passed"), "not run")
    console.print(
        f"artifact: {cfg.out} ({'reused' if reused else f'exported in {manifest.export_seconds} s'}"
        f"); parity vs eager fp32 {verdict} {parity.get('metric', '')}",
        highlight=False,
    )
    if parity.get("passed") is not True and not args.skip_parity:
        why = "; ".join(parity.get("failures", [])) or parity.get("skipped", "no parity result")
        raise ArtifactRefused(
            f"artifact {cfg.out} did not pass parity ({why}); re-export it, or pass "
            "--skip-parity to benchmark it anyway"
        )
    return replace(engine_cfg, artifact=cfg.out), parity.get("metric") or verdict


def _row(
    parity_metric, res, spec, engine_cfg, profile, detected, workload, flops, peak, key, key_cfg
) -> dict:
    from harness.results import TRITON_CONFIG_COLUMNS, context_columns

    thr = res.throughput.avg
    info = res.engine_info
    vectors = None if spec.task == "classification" else (1, 1, 1)
    if res.num_vectors is not None:
        vectors = res.num_vectors
    row = {
        "total_requests": res.calls,
        "successful_requests": res.calls,
        "failed_requests": 0,
        "test_duration_sec": res.duration_s,
        "avg_latency_ms": res.e2e.avg,
        "p50_latency_ms": res.e2e.p50,
        "p90_latency_ms": res.e2e.p90,
        "p95_latency_ms": res.e2e.p95,
        "p99_latency_ms": res.e2e.p99,
        "throughput_req_per_sec": thr,
        "throughput_peak": res.throughput.peak,
        "batch_size": res.config.batch_size,
        "vus": res.config.n_models * res.config.workers_per_model,
        "vendor": "local",
        "n_models": res.config.n_models,
        "workers_per_model": res.config.workers_per_model,
        "avg_num_vectors": vectors and vectors[1],
        "min_num_vectors": vectors and vectors[0],
        "max_num_vectors": vectors and vectors[2],
        "invalid_embeddings": res.invalid,
        "inputs_per_request": res.config.batch_size,
        "latency_ms_p0": res.forward.p0,
        "latency_ms_p50": res.forward.p50,
        "latency_ms_p90": res.forward.p90,
        "latency_ms_p95": res.forward.p95,
        "latency_ms_p99": res.forward.p99,
        "latency_ms_p100": res.forward.p100,
        "throughput_avg": thr,
        "mode": "inprocess",
        "protocol": "python" + ("-processes" if res.config.processes else "-threads"),
        "padding_ratio": res.padding_ratio,
        "accuracy": res.accuracy,
        "throughput_method": res.throughput.method,
        "cpu_percent": res.cpu_percent,
        "peak_rss_mb": res.peak_rss_mb,
        "peak_gpu_mem_mb": res.peak_gpu_mem_mb,
        "config_key": key,
        "config_json": json.dumps(
            {
                **key_cfg,
                "hit_deadline": res.hit_deadline,
                "engine_info": {k: v for k, v in info.items() if k != "parity"},
            },
            sort_keys=True,
            default=str,
        ),
    }
    # tokens/s from the calls' own useful tokens (the workload mean is only an estimate)
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
            inputs_per_sec=thr,
            parity_metric=parity_metric,
        )
    )
    row["cost_per_1m_tokens"] = cost_per_1m_tokens(profile.price_per_hour, res.tokens_per_sec)
    row.update(res.server)
    row.update({k: info[k] for k in TRITON_CONFIG_COLUMNS if k in info})
    if res.avg_pixels is not None:  # what the timed calls saw, rather than the workload's mean
        row.update(avg_pixels=res.avg_pixels, avg_visual_tokens=res.avg_visual_tokens)
    return row


if __name__ == "__main__":
    sys.exit(main())
