"""Exporter ABC and registry: a model spec in, an artifact folder (files + manifest) out."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from engines.errors import ConfigError, NotImplementedYet
from engines.models import WEIGHTS, ModelSpec, get_spec
from engines.registry import engine_class
from engines.vision import check_bucket

# (batch, tokens) shapes every export is checked at; 200 > ModernBERT's 128-token local window
PARITY_SHAPES: tuple[tuple[int, int], ...] = ((1, 16), (4, 64), (2, 200))
# vision ONNX buckets when none are asked for: the seed's 600x400 page (588x392 after the default
# resize budget = a 28x42 patch grid) at batch 1 and 2
DEFAULT_IMAGE_BUCKETS: tuple[tuple[int, int, int], ...] = ((1, 28, 42), (2, 28, 42))


@dataclass(frozen=True)
class ExportConfig:
    """What to export and for which target; a pure value validated on construction."""

    model: str
    format: str
    out: str
    precision: str = "fp32"
    variant: str = ""  # exporter-specific, e.g. "optimized" for ONNX
    device: str = "cpu"  # where the artifact will run: cpu | cuda | neuron
    hw: str = "cpu"  # hardware profile name it is built for
    weights: str = "auto"
    model_path: str | None = None
    seed: int = 0
    opset: int = 17
    # shape profile: batch and sequence ranges the artifact must accept (min, opt, max)
    batch_range: tuple[int, int, int] = (1, 8, 32)
    seq_range: tuple[int, int, int] = (8, 128, 512)
    buckets: tuple[tuple[int, int], ...] = ()  # static-shape formats (neuron): (batch, seq)
    # vision ONNX: (batch, grid height, grid width) in 14-pixel patches; () = DEFAULT_IMAGE_BUCKETS
    image_buckets: tuple[tuple[int, int, int], ...] = ()
    workspace_gb: float = 4.0  # TensorRT builder workspace limit
    skip_parity: bool = False
    trust_remote_code: bool = False  # let transformers run code shipped in the model folder

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

    def expected_hardware(self, cfg: ExportConfig) -> dict[str, Any] | None:
        """Hardware keys a cached artifact must match to be reused (None: portable)."""
        return None

    @abstractmethod
    def export(self, cfg: ExportConfig, model: Any, tokenizer: Any, out_dir: Path) -> ExportInfo:
        """Write the artifact's files into `out_dir` (the manifest is written by the caller)."""

    def vision_buckets(self, cfg: ExportConfig) -> list[tuple[int, int, int]] | None:
        """Fixed (batch, grid h, grid w) buckets a vision artifact runs; None: any image size.

        Parity then runs at exactly these shapes, and a cached artifact is reused only if it
        holds them all.
        """
        return None


EXPORTERS: dict[str, str | None] = {
    "onnx": "exporters.onnx:OnnxExporter",
    "openvino": "exporters.openvino:OpenVinoExporter",
    "aoti": "exporters.torch_export:AotiExporter",
    "trt": "exporters.tensorrt:TensorRTExporter",
    "neuron": "exporters.neuron:NeuronExporter",
    "triton": "exporters.triton:TritonExporter",
}


def exporter_class(fmt: str) -> type[Exporter]:
    if fmt not in EXPORTERS:
        raise ConfigError(f"unknown --format {fmt!r}; choose one of: {', '.join(EXPORTERS)}")
    target = EXPORTERS[fmt]
    if target is None:
        raise NotImplementedYet(f"--format {fmt} is not implemented yet")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)
