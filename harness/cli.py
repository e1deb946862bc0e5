"""What the commands share: flags, one-line errors, logging, consoles and exit codes."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import fields

from engines.base import ATTENTIONS, PRECISIONS
from engines.errors import BillionbenchError
from engines.models import DEFAULT_MODEL, MODELS, TASKS, WEIGHTS
from engines.registry import ENGINES, engine_class

log = logging.getLogger("billionbench")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2, no usage dump) and defaults in --help."""

    def __init__(self, **kw):
        kw.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(**kw)

    def error(self, message: str) -> None:
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
        "--artifact", default=None, help="use this artifact folder instead of exporting on demand"
    )
    g.add_argument(
        "--artifacts-dir", default="artifacts", help="cache of on-demand exports, reused if valid"
    )
    g.add_argument(
        "--trust-artifact",
        action="store_true",
        help="load an --artifact with native code (.pt2, TensorRT plan, Neuron, TorchScript) or "
        "believe its parity result although its manifest is not sealed by this machine's key "
        "(recorded in the row)",
    )
    g.add_argument(
        "--skip-parity",
        action="store_true",
        help="benchmark an artifact that failed (or skipped) the parity gate",
    )
    add_engine_options(p)
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


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """Every engine's own options, generated from its Options dataclass (one flag per field)."""
    g = p.add_argument_group("engine options (each applies to the engine it names)")
    seen: set[str] = set()
    for name in ENGINES:
        for f in fields(engine_class(name).Options):
            flag = f.metadata["flag"]
            if flag in seen:
                continue
            seen.add(flag)
            kind = type(f.default) if f.default is not None else str
            g.add_argument(
                flag,
                dest=f.name,
                type=kind,
                default=f.default,
                choices=f.metadata.get("choices"),
                help=f.metadata["help"],
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


def setup_logging(console, verbose: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
    # third-party libraries speak at WARNING and up; ours at INFO (DEBUG with -v)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler], force=True)
    for ours in ("billionbench", "engines", "exporters", "harness"):
        logging.getLogger(ours).setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("transformers", "urllib3", "filelock", "huggingface_hub", "datasets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def add_output_args(p: argparse.ArgumentParser) -> None:
    """Where rows go, resume / fresh, and verbosity: the same for every benchmark command."""
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


def consoles():
    """(stdout console, stderr console); 160 columns when not a terminal (logs, CI)."""
    from rich.console import Console

    out = Console(stderr=False)
    width = None if out.is_terminal else 160
    if width:
        out = Console(stderr=False, width=width)
    return out, Console(stderr=True, width=width)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_command(body: Callable[[argparse.Namespace, object], int], args) -> int:
    """Run a benchmark command: one-line errors (exit 2; 1 for OS errors), 130 on Ctrl-C."""
    console, err = consoles()
    setup_logging(err, getattr(args, "verbose", False))
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM cleans up (servers, engines) the way Ctrl-C does
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return body(args, console)
    except BillionbenchError as e:
        print_error(err, e)
        return 2
    except OSError as e:
        print_error(err, e)
        return 1
    except KeyboardInterrupt:
        out = getattr(args, "output_dir", "results")
        err.print(
            f"[yellow]interrupted[/]: measured rows are in {out}/results.csv; "
            "run the same command again to resume"
        )
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def add_batcher_args(p: argparse.ArgumentParser) -> None:
    """The dynamic batcher's flags (harness.serve, and harness.sweep for its servers)."""
    g = p.add_argument_group("dynamic batcher")
    g.add_argument("--max-batch-size", type=int, default=32, help="inputs per forward pass")
    g.add_argument(
        "--max-batch-tokens",
        type=int,
        default=16384,
        help="padded tokens per forward pass (batch x longest input)",
    )
    g.add_argument(
        "--max-queue-delay-ms",
        type=float,
        default=2.0,
        help="how long the oldest input may wait for its batch to fill",
    )
    g.add_argument(
        "--max-queue",
        type=int,
        default=4096,
        help="inputs waiting before new requests get 429 + Retry-After",
    )
    g.add_argument("--max-request-inputs", type=int, default=256, help="inputs per request")
    g.add_argument(
        "--fifo",
        action="store_true",
        help="plain FIFO batching instead of grouping inputs by length",
    )
    g.add_argument(
        "--micro-batches",
        choices=("auto", "on", "off"),
        default="auto",
        help="run each batch as near-equal-length micro-batches, back to back (auto: on CPU)",
    )
    g.add_argument(
        "--micro-batch-padding",
        type=float,
        default=0.05,
        help="the padding fraction one micro-batch may carry",
    )


def build_serve_parser() -> argparse.ArgumentParser:
    """What `python -m harness.serve` parses (the sweep derives its server's argv from it)."""
    p = Parser(
        prog="harness.serve",
        description="Serve any engine over HTTP through the dynamic batcher: KServe v2 / Triton "
        "(/v2/...), OpenAI /v1/embeddings, /classify and Prometheus /metrics, on 127.0.0.1 "
        "unless told otherwise.",
    )
    p.set_defaults(task="classification")
    add_common_args(p)
    add_batcher_args(p)
    g = p.add_argument_group("http")
    g.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    g.add_argument("--port", type=int, default=8000)
    g.add_argument("--max-body-mb", type=float, default=8.0, help="request body cap")
    g.add_argument("--max-text-chars", type=int, default=100_000, help="per-input character cap")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    g.add_argument(
        "--truncate",
        action="store_true",
        help="cut inputs at the model's max length instead of answering 413",
    )
    return p


# flags the sweep sets itself for every server it starts
_SWEEP_SETS = {
    "help",
    "port",
    "host",
    "max_batch_size",
    "max_request_inputs",
    "truncate",
    "verbose",
}


def serve_argv(args: argparse.Namespace, batch_size: int) -> list[str]:
    """The `harness.serve` flags for a sweep's server: every serve flag the user set, plus this
    point's max batch size (derived from the serve parser, so a new flag needs no code here)."""
    argv: list[str] = []
    for action in build_serve_parser()._actions:
        if action.dest in _SWEEP_SETS or not hasattr(args, action.dest):
            continue
        flag = next(s for s in action.option_strings if s.startswith("--"))
        value = getattr(args, action.dest)
        if isinstance(action, argparse._StoreTrueAction):
            argv += [flag] if value else []
        elif value is not None and value != action.default:
            argv += [flag, str(value)]
    request_inputs = max(args.max_request_inputs, *args.inputs_per_request)
    argv += ["--max-batch-size", str(batch_size), "--max-request-inputs", str(request_inputs)]
    return [*argv, "--truncate"]
