"""What the commands share: flags, one-line errors, logging, consoles and exit codes."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import fields

from engines.base import ATTENTIONS, PRECISIONS
from engines.errors import BillionbenchError, ConfigError
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


def choice_list(choices: tuple[str, ...]) -> Callable[[str], str]:
    """An argparse type: one of `choices`, or a comma list of them (kept as the string)."""

    def parse(text: str) -> str:
        for item in text.split(","):
            if item.strip() not in choices:
                raise argparse.ArgumentTypeError(
                    f"invalid choice: {item.strip()!r} (choose from {', '.join(choices)})"
                )
        return text

    return parse


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Model, engine and hardware flags shared by harness.run, harness.serve and harness.sweep."""
    from harness.hardware import PROFILES

    g = p.add_argument_group("model")
    g.add_argument(
        "--task",
        choices=TASKS,
        default=None,
        help="what the model does (default: the model's own task; classification without --model)",
    )
    g.add_argument(
        "--model",
        default=None,
        help="a registry name, a local Hugging Face model folder or a Hub id (task, pooling, "
        "normalisation, max length and labels come from the folder's own files); default: the "
        f"task's model {DEFAULT_MODEL}. Registry: {', '.join(sorted(MODELS))}",
    )
    g.add_argument(
        "--model-path",
        default=None,
        help="alone: the same as --model DIR; with a registry --model: load that model's "
        "weights/tokenizer from this directory",
    )
    g.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="auto",
        help="auto: local dir > HF cache > Hub > random (labelled); random: never fetch",
    )
    add_flags(
        g,
        None,
        """
        --max-seq-len       | int  |   | truncate inputs to this many tokens (default: the model's limit)
        --seed              | int  | 0 | workload and random-weight seed
        --trust-remote-code | flag |   | let transformers run Python code shipped in the model folder (auto_map); off by default, recorded in the row
        """,
    )
    g = p.add_argument_group("engine")
    g.add_argument(
        "--engine",
        default="eager",
        help=f"one of: {', '.join(ENGINES)} (a comma list with --executor ray)",
    )
    g.add_argument(
        "--precision",
        type=choice_list(PRECISIONS),
        default="fp32",
        help=f"one of: {', '.join(PRECISIONS)} (a comma list with --executor ray)",
    )
    g.add_argument("--attn", choices=ATTENTIONS, default="sdpa", help="attention implementation")
    add_flags(
        g,
        None,
        """
        --threads | int | | torch intra-op threads (default: torch's choice, usually all cores)
        """,
    )
    g.add_argument(
        "--variant",
        default="",
        help="artifact variant: 'optimized' (ONNX fusions); for --engine triton the encoder "
        "backend of the repository it writes (python | onnxruntime | pytorch | tensorrt)",
    )
    add_flags(
        g,
        None,
        """
        --artifact       | str  |           | use this artifact folder instead of exporting on demand
        --artifacts-dir  | str  | artifacts | cache of on-demand exports, reused if valid
        --trust-artifact | flag |           | load an --artifact with native code (.pt2, TensorRT plan, Neuron, TorchScript) or believe its parity result although its manifest is not sealed by this machine's key (recorded in the row)
        --skip-parity    | flag |           | benchmark an artifact that failed (or skipped) the parity gate
        """,
    )
    add_engine_options(p)
    g = p.add_argument_group("hardware and cost")
    g.add_argument(
        "--hw",
        default="auto",
        help="hardware profile; must match this machine (with --executor ray: a comma list of "
        f"targets on the cluster). auto or one of: {', '.join(PROFILES)}",
    )
    g.add_argument(
        "--price-per-hour",
        type=positive_float,
        default=None,
        help="override the profile's $/hr (recorded as the price source)",
    )
    add_flags(
        p,
        "vision models (--task vision-embedding)",
        """
        --min-pixels       | int | | image processor: resize up to at least this
        --max-pixels       | int | | image processor: resize down to at most this (default 768*28*28: 768 visual tokens)
        --max-image-pixels | int | | refuse decoded images larger than this (default 40,000,000)
        """,
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


EXECUTORS = ("local", "ray")
#: the flags that take a comma list of targets with --executor ray
TARGET_FLAGS = ("hw", "engine", "precision")


def add_executor_args(p: argparse.ArgumentParser) -> None:
    """Where points run: this process (local) or a Ray cluster (harness.run, harness.sweep)."""
    g = p.add_argument_group("executor (where points run)")
    g.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: this machine; ray: a Ray cluster, one benchmark per accelerator at a time "
        '(pip install -e ".[ray]")',
    )
    g.add_argument(
        "--ray-address",
        default=None,
        help="the cluster to join (default: $RAY_ADDRESS, then auto; with none found a local "
        "one is started)",
    )
    g.add_argument(
        "--ray-resources",
        action="append",
        default=[],
        metavar="HW=JSON",
        help='the Ray resources that select a hardware, e.g. l4=\'{"GPU": 1, "L4": 1}\' '
        "(default: GPU + accelerator_type:<T4|L4|...>, neuron_cores for inf2, CPU for cpu)",
    )
    g.add_argument(
        "--fetch-artifacts",
        choices=("best", "all", "none"),
        default="best",
        help="copy the artifacts the cluster exported back to <artifacts-dir>/<hw>/ (best: the "
        "cheapest point's per hardware)",
    )


def require_single_targets(args: argparse.Namespace) -> None:
    """The local executor measures one target: a comma list needs --executor ray."""
    for flag in TARGET_FLAGS:
        value = str(getattr(args, flag, "") or "")
        if "," in value:
            raise ConfigError(
                f"--{flag} {value}: a list of targets needs --executor ray; the local executor "
                "measures one"
            )


def setup_logging(console, verbose: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
    # third-party libraries speak at WARNING and up; ours at INFO (DEBUG with -v)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler], force=True)
    for ours in ("billionbench", "engines", "exporters", "harness"):
        logging.getLogger(ours).setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("transformers", "urllib3", "filelock", "huggingface_hub", "datasets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


_TYPES = {"int": int, "float": float, "str": str, "positive_float": None, "int_list": None}


def add_flags(p, title: str | None, spec: str) -> None:
    """A group of flags from lines of `--flag | type | default | help`, where type is int,
    float, str, positive_float, int_list, flag (store_true) or choice:a,b,c, and an empty
    default is None: a command's flags read as a table. `title` None: add to `p` itself."""
    g = p.add_argument_group(title) if title is not None else p
    for line in filter(None, (ln.strip() for ln in spec.strip().splitlines())):
        flag, kind, default, help_ = (part.strip() for part in line.split("|", 3))
        if kind == "flag":
            g.add_argument(flag, action="store_true", help=help_ or None)
            continue
        choices = tuple(kind.split(":", 1)[1].split(",")) if kind.startswith("choice:") else None
        convert = {"positive_float": positive_float, "int_list": int_list}.get(kind)
        convert = convert or _TYPES.get(kind) or str
        value = convert(default) if default else None
        g.add_argument(flag, type=convert, default=value, choices=choices, help=help_ or None)


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
    """Run a benchmark command: one-line errors with exit code 2, 130 on Ctrl-C."""
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
        return 2
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
    add_flags(
        p,
        "dynamic batcher",
        """
        --max-batch-size     | int   | 32    | inputs per forward pass
        --max-batch-tokens   | int   | 16384 | padded tokens per forward pass (batch x longest input)
        --max-queue-delay-ms | float | 2.0   | how long the oldest input may wait for its batch to fill
        --max-queue          | int   | 4096  | inputs waiting before new requests get 429 + Retry-After
        --max-request-inputs | int   | 256   | inputs per request
        --fifo               | flag  |       | plain FIFO batching instead of grouping inputs by length
        --micro-batches      | choice:auto,on,off | auto | run each batch as near-equal-length micro-batches, back to back (auto: on CPU)
        --micro-batch-padding | float | 0.05 | the padding fraction one micro-batch may carry
        """,
    )


def build_serve_parser() -> argparse.ArgumentParser:
    """What `python -m harness.serve` parses (the sweep derives its server's argv from it)."""
    p = Parser(
        prog="harness.serve",
        description="Serve any engine over HTTP through the dynamic batcher: KServe v2 / Triton "
        "(/v2/...), OpenAI /v1/embeddings, /classify and Prometheus /metrics, on 127.0.0.1 "
        "unless told otherwise.",
    )
    add_common_args(p)
    add_batcher_args(p)
    g = p.add_argument_group("http")
    g.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="also serve KServe v2 over gRPC on this port, same --host (default: no gRPC); "
        "needs the triton extra",
    )
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
