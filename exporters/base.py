"""Exporter ABC and registry: a model spec in, an artifact folder (files + manifest) out."""

from __future__ import annotations

import argparse
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from core.config import arg
from core.errors import ConfigError
from engines.artifact import Manifest
from engines.base import PRECISIONS
from engines.models import TRUST_REMOTE_CODE, WEIGHTS, ModelSpec, get_spec
from engines.registry import engine_class
from engines.vision import PixelBudget, check_bucket, image_grid

# (batch, tokens) shapes every export is checked at; 200 > ModernBERT's 128-token local window
PARITY_SHAPES: tuple[tuple[int, int], ...] = ((1, 16), (4, 64), (2, 200))
# vision ONNX buckets when none are asked for: a 600x400 document page (588x392 after the default
# resize budget = a 28x42 patch grid) at batch 1 and 2
DEFAULT_IMAGE_BUCKETS: tuple[tuple[int, int, int], ...] = ((1, 28, 42), (2, 28, 42))


EXPORTERS: dict[str, str] = {
    "onnx": "exporters.onnx:OnnxExporter",
    "openvino": "exporters.openvino:OpenVinoExporter",
    "aoti": "exporters.torch_export:AotiExporter",
    "trt": "exporters.tensorrt:TensorRTExporter",
    "neuron": "exporters.neuron:NeuronExporter",
    "triton": "exporters.triton:TritonExporter",
}


def _range(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,OPT,MAX integers, got {text!r}") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected MIN,OPT,MAX, got {text!r}")
    return parts  # type: ignore[return-value]


def parse_image_buckets(text: str) -> tuple[tuple[int, int, int], ...]:
    """'1:600x400,2:600x400' -> (batch, grid h, grid w) under the default resize budget."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            b, _, size = part.partition(":")
            w, h = (int(x) for x in size.lower().split("x"))
            batch = int(b)
        except ValueError:
            raise ConfigError(
                f"--image-buckets takes BATCH:WIDTHxHEIGHT[,...] (e.g. 1:600x400); got {part!r}"
            ) from None
        out.append((batch, *image_grid(w, h, PixelBudget())))
    return tuple(out)


@dataclass(frozen=True)
class ExportConfig:
    """What to export and for which target; a pure value validated on construction."""

    model: str = arg(help="a local model folder, a Hub id, or a registry name")
    format: str = arg(help="one of: " + ", ".join(EXPORTERS))
    out: str = arg(help="artifact folder (default artifacts/<model>/...)")
    precision: str = arg("fp32", choices=PRECISIONS, help="weights and activations")
    variant: str = arg("", help="'optimized' = ONNX Runtime transformer fusions")
    device: str = arg(
        "cpu",
        choices=("cpu", "cuda", "neuron"),
        help="where the artifact will run (default: this machine's)",
    )
    hw: str = arg("cpu", cli=False, help="hardware profile name it is built for")
    weights: str = arg("auto", choices=WEIGHTS, help="auto | pretrained | random")
    model_path: str | None = arg(None, help="the model's weights/tokenizer from this folder")
    seed: int = arg(0, help="random-weight seed")
    opset: int = arg(17, help="ONNX opset")
    # shape profile: batch and sequence ranges the artifact must accept (min, opt, max)
    batch_range: tuple[int, int, int] = arg(
        (1, 8, 32),
        parse=_range,
        help="MIN,OPT,MAX batch for shape profiles (TensorRT) / buckets (Neuron)",
    )
    seq_range: tuple[int, int, int] = arg((8, 128, 512), parse=_range, help="MIN,OPT,MAX tokens")
    buckets: tuple[tuple[int, int], ...] = arg(  # static-shape formats (neuron): (batch, seq)
        (), cli=False, help=""
    )
    # vision ONNX: (batch, grid height, grid width) in 14-pixel patches; () = DEFAULT_IMAGE_BUCKETS
    image_buckets: tuple[tuple[int, int, int], ...] = arg(
        (),
        parse=parse_image_buckets,
        metavar="BATCH:WxH[,...]",
        help="vision ONNX: fixed buckets, each the image grid that size gets under the default "
        "resize budget (default 1:600x400,2:600x400); only these run",
    )
    workspace_gb: float = arg(4.0, help="TensorRT builder workspace (GB)")
    skip_parity: bool = arg(
        False,
        help="do not compare against eager fp32 (the harness then refuses it unless it is "
        "also given --skip-parity)",
    )
    trust_remote_code: bool = arg(False, help=TRUST_REMOTE_CODE)

    def __post_init__(self) -> None:
        get_spec(self.model)
        if self.image_buckets:
            for b in self.image_buckets:
                check_bucket(b)
        if self.weights not in WEIGHTS:
            raise ConfigError(f"--weights must be one of {WEIGHTS}; got {self.weights!r}")
        for name in ("batch_range", "seq_range"):
            lo, opt, hi = getattr(self, name)
            if not 1 <= lo <= opt <= hi:
                raise ConfigError(f"{name} must satisfy 1 <= min <= opt <= max; got {lo, opt, hi}")

    @property
    def spec(self) -> ModelSpec:
        return get_spec(self.model)


@dataclass
class ExportInfo:
    """What an exporter reports back; becomes the manifest together with provenance."""

    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[str, str]] = field(default_factory=dict)
    shape_profiles: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    tool_versions: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    #: the format's own parity result (e.g. inherited from the artifact it wraps); None: the
    #: export flow loads the artifact with the format's engine and compares it with eager fp32
    parity: dict[str, Any] | None = None


class Exporter(ABC):
    """One artifact format. `check` fails fast (missing library/hardware) before any work."""

    format: ClassVar[str]
    engine: ClassVar[str]  # the engine name that runs this format
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    variants: ClassVar[tuple[str, ...]] = ("",)
    #: attention implementation the model is exported with (eager gives fusable graphs)
    export_attn: ClassVar[str] = "eager"
    #: model tasks this format exports; the engine's `task_note` says why others are refused
    tasks: ClassVar[tuple[str, ...]] = ("classification", "embedding")
    #: precisions that need a CUDA target, each with what to do instead
    gpu_precisions: ClassVar[dict[str, str]] = {}

    def check(self, cfg: ExportConfig) -> None:
        """Validate task/precision/variant; subclasses add library and hardware checks."""
        if cfg.spec.task not in self.tasks:
            note = engine_class(self.engine).task_note
            raise ConfigError(
                f"--format {self.format} does not export {cfg.spec.task} models ({cfg.model})"
                + (f": {note}" if note else "")
            )
        if cfg.precision not in self.precisions:
            raise ConfigError(
                f"--format {self.format} supports --precision {', '.join(self.precisions)}; "
                f"got {cfg.precision!r}"
            )
        if cfg.variant not in self.variants:
            allowed = ", ".join(repr(v) for v in self.variants)
            raise ConfigError(
                f"--format {self.format} supports --variant {allowed}; got {cfg.variant!r}"
            )
        if cfg.precision in self.gpu_precisions and cfg.device != "cuda":
            raise ConfigError(self.gpu_precisions[cfg.precision])

    def expected_hardware(self, cfg: ExportConfig) -> dict[str, Any] | None:
        """Hardware keys a cached artifact must match to be reused (None: portable)."""
        return None

    @abstractmethod
    def export(self, cfg: ExportConfig, model: Any, tokenizer: Any, out_dir: Path) -> ExportInfo:
        """Write the artifact's files into `out_dir` (the manifest is written by the caller)."""

    def widen(self, cfg: ExportConfig, m: Manifest) -> ExportConfig | None:
        """None when the cached artifact `m` holds every shape `cfg` needs; else `cfg` widened
        to hold both, so the cache only grows. Shape-bound formats (TensorRT profiles, Neuron
        buckets) override this; ONNX text graphs and AOTInductor packages take any batch and
        sequence, and a fixed-size vision artifact must hold its buckets."""
        buckets = self.vision_buckets(cfg)
        if buckets is not None and not holds_buckets(m, buckets):
            have = [tuple(x["bucket"]) for x in m.shape_profiles.get("image_buckets", [])]
            return replace(cfg, image_buckets=tuple(sorted({*have, *buckets})))
        return None

    def vision_buckets(self, cfg: ExportConfig) -> list[tuple[int, int, int]] | None:
        """Fixed (batch, grid h, grid w) buckets a vision artifact runs; None: any image size.

        Parity then runs at exactly these shapes, and a cached artifact is reused only if it
        holds them all.
        """
        return None


@runtime_checkable
class TakesSettings(Protocol):
    """An exporter with settings of its own beyond ExportConfig (Triton's serving settings):
    `harness.export` adds their flags and builds the exporter from them."""

    @classmethod
    def settings(cls) -> type:
        """The settings dataclass; its `core.config.arg` fields are the flags."""
        ...

    @classmethod
    def configured(cls, settings: Any, cfg: ExportConfig) -> tuple[Exporter, ExportConfig]:
        """The exporter with these settings, and `cfg` as they change it (variant, out)."""
        ...


def holds_buckets(m: Manifest, buckets) -> bool:
    """Whether a fixed-size vision artifact has every (batch, grid h, grid w) bucket asked for."""
    have = {tuple(x["bucket"]) for x in m.shape_profiles.get("image_buckets", [])}
    return {tuple(b) for b in buckets} <= have


def exporter_class(fmt: str) -> type[Exporter]:
    if fmt not in EXPORTERS:
        raise ConfigError(f"unknown --format {fmt!r}; choose one of: {', '.join(EXPORTERS)}")
    module, _, cls = EXPORTERS[fmt].partition(":")
    return getattr(importlib.import_module(module), cls)
