"""The configs every benchmark command shares (target, executor, output), and flag types.

Each is a frozen dataclass whose fields carry their flag (`core.config.arg`); the commands
turn them into flags and back with `core.config.add_config` / `config_from`, and hand the
typed values to scenarios, never a Namespace.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from core.config import arg, choice_list, config_from, flag_of, positive_float
from core.errors import ConfigError
from engines.base import ATTENTIONS, PRECISIONS, VisionOptions
from engines.models import DEFAULT_MODEL, MODELS, TASKS, TRUST_REMOTE_CODE, WEIGHTS
from engines.registry import ENGINES, engine_class
from harness.cli import add_config
from serving.config import ServeConfig

# --------------------------------------------------------------------------- flag types


# --------------------------------------------------------------------------- shared configs

#: the target fields that take a comma list of targets with --executor ray
TARGET_LISTS = ("hw", "engine", "precision")


def _engine_option_values(values: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for name in ENGINES for f in fields(engine_class(name).Options)}
    return {k: values[k] for k in sorted(names) if k in values}


@dataclasses.dataclass(frozen=True)
class TargetConfig:
    """What to measure: a model, an engine (with its artifact) and the hardware it runs on."""

    task: str | None = arg(
        None,
        choices=TASKS,
        help="what the model does (default: the model's own task; classification without --model)",
    )
    model: str | None = arg(
        None,
        help="a registry name, a local Hugging Face model folder or a Hub id (task, pooling, "
        "normalisation, max length and labels come from the folder's own files); default: the "
        f"task's model {DEFAULT_MODEL}. Registry: {', '.join(sorted(MODELS))}",
    )
    model_path: str | None = arg(
        None,
        help="alone: the same as --model DIR; with a registry --model: load that model's "
        "weights/tokenizer from this directory",
    )
    weights: str = arg(
        "auto",
        choices=WEIGHTS,
        help="auto: local dir > HF cache > Hub > random (labelled); random: never fetch",
    )
    max_seq_len: int | None = arg(
        None, help="truncate inputs to this many tokens (default: the model's limit)"
    )
    seed: int = arg(0, help="workload and random-weight seed")
    trust_remote_code: bool = arg(False, help=TRUST_REMOTE_CODE)
    engine: str = arg(
        "eager", help=f"one of: {', '.join(ENGINES)} (a comma list with --executor ray)"
    )
    precision: str = arg(
        "fp32",
        parse=choice_list(PRECISIONS),
        help=f"one of: {', '.join(PRECISIONS)} (a comma list with --executor ray)",
    )
    attn: str = arg("sdpa", choices=ATTENTIONS, help="attention implementation")
    threads: int | None = arg(
        None, help="intra-op threads (default: the runtime's choice, usually all cores)"
    )
    variant: str = arg(
        "",
        help="artifact variant: 'optimized' (ONNX fusions); for --engine triton the encoder "
        "backend of the repository it writes (python | onnxruntime | pytorch | tensorrt)",
    )
    artifact: str | None = arg(None, help="use this artifact folder instead of exporting on demand")
    artifacts_dir: str = arg("artifacts", help="cache of on-demand exports, reused if valid")
    trust_artifact: bool = arg(
        False,
        help="load an --artifact with native code (.pt2, TensorRT plan, Neuron, TorchScript) "
        "or believe its parity result although its manifest is not sealed by this machine's "
        "key (recorded in the row)",
    )
    skip_parity: bool = arg(
        False, help="benchmark an artifact that failed (or skipped) the parity gate"
    )
    hw: str = arg(
        "auto",
        help="hardware profile; must match this machine (with --executor ray: a comma list of "
        "targets on the cluster). auto or a profile name (python -m harness.plan lists them)",
    )
    price_per_hour: float | None = arg(
        None,
        parse=positive_float,
        help="override the profile's $/hr (recorded as the price source)",
    )
    #: every engine's own options by field name (flags generated from each engine's Options;
    #: the vision engines' VisionOptions among them: min_pixels, max_pixels, max_image_pixels)
    engine_options: Mapping[str, Any] = arg(help="", cli=False, default_factory=dict)

    @property
    def names_model(self) -> str:
        """The model this target names (the task's default when none is given)."""
        return self.model or self.model_path or DEFAULT_MODEL[self.task or "classification"]

    def targets(self) -> list[TargetConfig]:
        """One target per combination of the comma lists (--executor ray)."""
        import itertools

        lists = [_split(getattr(self, k)) for k in TARGET_LISTS]
        return [
            dataclasses.replace(self, **dict(zip(TARGET_LISTS, combo, strict=True)))
            for combo in itertools.product(*lists)
        ]

    def require_single(self) -> None:
        """The local executor measures one target: a comma list needs --executor ray."""
        for name in TARGET_LISTS:
            value = str(getattr(self, name) or "")
            if "," in value:
                raise ConfigError(
                    f"--{name} {value}: a list of targets needs --executor ray; the local "
                    "executor measures one"
                )

    @property
    def name(self) -> str:
        return f"{self.hw}/{self.engine}/{self.precision}"


def _split(value: str) -> list[str]:
    return [v.strip() for v in str(value).split(",") if v.strip()]


def add_target(parser: argparse.ArgumentParser) -> None:
    """The target's flags, grouped, and every engine's own options."""
    groups = {
        "model": ("task", "model", "model_path", "weights", "max_seq_len", "seed"),
        "engine": ("trust_remote_code", "engine", "precision", "attn", "threads", "variant"),
        "artifact": ("artifact", "artifacts_dir", "trust_artifact", "skip_parity"),
        "hardware and cost": ("hw", "price_per_hour"),
    }
    for title, names in groups.items():
        add_config(parser, TargetConfig, title, only=names)
    add_config(parser, VisionOptions, "vision models (--task vision-embedding)")
    add_engine_options(parser)


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Every engine's own options, generated from its Options dataclass (one flag per field)."""
    g = parser.add_argument_group("engine options (each applies to the engine it names)")
    seen: set[str] = parser.__dict__.setdefault("_bb_dests", set())
    for name in ENGINES:
        for f in fields(engine_class(name).Options):
            if f.name in seen:
                continue
            seen.add(f.name)
            kind = type(f.default) if f.default is not None else str
            g.add_argument(
                flag_of(f),
                dest=f.name,
                type=kind,
                default=f.default,
                choices=f.metadata.get("choices"),
                help=f.metadata["help"],
            )


def target_from(ns: argparse.Namespace) -> TargetConfig:
    return config_from(TargetConfig, ns, engine_options=_engine_option_values(vars(ns)))


EXECUTORS = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class ExecutorConfig:
    """Where points run: this process (local) or a Ray cluster."""

    executor: str = arg(
        "local",
        choices=EXECUTORS,
        help="local: this machine; ray: a Ray cluster, one benchmark per accelerator at a time "
        '(pip install -e ".[ray]")',
    )
    ray_address: str | None = arg(
        None,
        help="the cluster to join (default: $RAY_ADDRESS, then auto; with none found a local "
        "one is started)",
    )
    ray_resources: tuple[str, ...] = arg(
        (),
        parse=str,
        repeat=True,
        metavar="HW=JSON",
        help='the Ray resources that select a hardware, e.g. l4=\'{"GPU": 1, "L4": 1}\' '
        "(repeatable; default: GPU + accelerator_type:<T4|L4|...>, neuron_cores for inf2, CPU "
        "for cpu)",
    )
    fetch_artifacts: str = arg(
        "best",
        choices=("best", "all", "none"),
        help="copy the artifacts the cluster exported back to <artifacts-dir>/<hw>/ (best: the "
        "cheapest point's per hardware)",
    )
    remeasure_disturbed: int = arg(
        0,
        help="measure a point again (up to N times) when the host was busy during it (its "
        "probes disagree or other processes used the CPU): the row says `disturbed` either way",
    )
    verbose: bool = arg(False, cli=False, help="")


def add_executor(parser: argparse.ArgumentParser) -> None:
    add_config(parser, ExecutorConfig, "executor (where points run)")


def executor_from(ns: argparse.Namespace) -> ExecutorConfig:
    return config_from(ExecutorConfig, ns, verbose=ns.verbose)


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """Where rows go, and whether a run resumes what a folder already holds."""

    output_dir: str = arg("results", help="where results.csv/.parquet go")
    fresh: bool = arg(
        False,
        negate=("--resume",),
        help="start over (old results are kept, renamed with a timestamp); the default resumes: "
        "configurations already in the results file are skipped (--resume)",
    )
    verbose: bool = arg(False, flag="--verbose", short="-v", help="debug logging")

    @property
    def resume(self) -> bool:
        return not self.fresh


@dataclasses.dataclass(frozen=True)
class ServeCommandConfig:
    """What `python -m harness.serve` runs: a target behind one server (from its flags, or
    from the JSON file a sweep writes for each server it starts)."""

    target: TargetConfig = arg(help="target", default_factory=TargetConfig)
    serve: ServeConfig = arg(help="server", default_factory=ServeConfig)
    verbose: bool = arg(False, flag="--verbose", short="-v", help="debug logging")


#: the project's root: `python -m harness.serve` runs from here
ROOT = Path(__file__).resolve().parents[1]


def serve_command(*argv: str) -> list[str]:
    """The command line of our server, `python -m harness.serve ARGV` (for ServerProcess)."""
    return [sys.executable, "-m", "harness.serve", *argv]


def add_output(parser: argparse.ArgumentParser) -> None:
    add_config(parser, OutputConfig, "output")


def benchmark_flags(parser: argparse.ArgumentParser, *configs: tuple[type, str]):
    """A benchmark command's flags: the target, then each (config, group title), then where
    points run and where rows go. Returns the parser."""
    add_target(parser)
    for cls, title in configs:
        add_config(parser, cls, title)
    add_executor(parser)
    add_output(parser)
    return parser
