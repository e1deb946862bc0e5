"""The Engine ABC: load / infer (the timed forward) / close, with shared pre/post-processing."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from core.config import arg, check_choices
from core.errors import ConfigError, EngineError
from engines.models import TASKS, WEIGHTS, ModelSpec, get_spec, load_tokenizer
from engines.pipeline import Batch, Pipeline, Prediction
from engines.vision import DEFAULT_MAX_IMAGE_PIXELS, PixelBudget, VisionPipeline

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
PROVIDERS = ("cpu", "cuda", "tensorrt")  # ONNX Runtime execution providers
PROVIDER_DEVICE = {"cpu": "cpu", "cuda": "cuda", "tensorrt": "cuda"}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
ATTENTIONS = ("sdpa", "eager", "flash_attention_2")
DEVICES = ("cpu", "cuda", "neuron")


def fields_from(cls: type, *sources: Any, **overrides: Any) -> Any:
    """Build the dataclass `cls` from the same-named attributes (or keys) of `sources`, later
    sources winning, then `overrides`: one call instead of copying fields one by one."""
    names = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for src in sources:
        got = src if isinstance(src, Mapping) else vars(src) if hasattr(src, "__dict__") else {}
        if not got and hasattr(src, "__dataclass_fields__"):
            got = {n: getattr(src, n) for n in src.__dataclass_fields__}
        values.update({k: v for k, v in got.items() if k in names})
    return cls(**{**values, **overrides})


def option(default: Any, *, flag: str, help: str, choices: tuple | None = None) -> Any:
    """A field of an engine's Options: its CLI flag, help and allowed values live with it."""
    return arg(default, flag=flag, help=help, choices=choices)


@dataclass(frozen=True)
class EngineOptions:
    """An engine's own options. Each engine subclasses it with `option()` fields; the CLI flags
    and the config_json entries are generated from those fields, so a new option is one line."""

    #: fields recorded in config_json only while set (a run that leaves them unset keeps the
    #: identity it had before they existed)
    recorded_when_set: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        check_choices(self)

    def check(self, config: EngineConfig) -> None:
        """Checks that need the rest of the config (device, precision); one-line errors."""
        return None

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> EngineOptions:
        """This engine's options out of a mapping holding any engines' (CLI args, kwargs)."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@dataclass(frozen=True)
class VisionOptions(EngineOptions):
    """The options of an engine that runs vision models: the image processor's resize budget
    and the decoded-image pixel limit. A vision engine's Options subclass this."""

    min_pixels: int | None = option(
        None,
        flag="--min-pixels",
        help="vision models: the image processor resizes up to at least this",
    )
    max_pixels: int | None = option(
        None,
        flag="--max-pixels",
        help="vision models: the image processor resizes down to at most this (default "
        "768*28*28: 768 visual tokens)",
    )
    max_image_pixels: int | None = option(
        None,
        flag="--max-image-pixels",
        help="vision models: refuse decoded images larger than this (default 40,000,000)",
    )
    recorded_when_set = ("min_pixels", "max_pixels", "max_image_pixels")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_image_pixels is not None and self.max_image_pixels < 1:
            raise ConfigError(f"--max-image-pixels must be >= 1; got {self.max_image_pixels}")
        if self.min_pixels is not None or self.max_pixels is not None:
            self.pixel_budget()  # validates

    def pixel_budget(self) -> PixelBudget:
        """The vision resize budget (defaults where unset); raises ConfigError when invalid."""
        d = PixelBudget()
        return PixelBudget(self.min_pixels or d.min_pixels, self.max_pixels or d.max_pixels)

    def image_limit(self) -> int:
        """The decoded-image pixel limit (the default where unset)."""
        return self.max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS


# -- optional abilities: an engine or its options that has one implements the protocol -------
@runtime_checkable
class ReportsServerStats(Protocol):
    """An engine that calls a server which counts its own work (Triton's statistics)."""

    def server_stats(self) -> dict[str, float]:
        """Cumulative server-side counters."""
        ...

    def server_delta(self, before: dict, after: dict) -> dict[str, Any]:
        """Result columns (server_*) for the work between two `server_stats` snapshots."""
        ...


@runtime_checkable
class HintsPadding(Protocol):
    """Engine options that know how the engine could skip computing padding."""

    def padding_hint(self) -> str | None:
        """How to skip computing padding, said when a run padded much (None: not here)."""
        ...


@dataclass(frozen=True)
class RemoteServer:
    """The kind of server an engine is a client of, and what the harness may do with it: the
    harness picks how to sweep and load-test the engine from these, never from a name."""

    #: the server's name, as the user knows it (e.g. "triton")
    name: str
    #: perf_analyzer can drive it (its KServe v2 endpoint, with the ensemble the engine calls)
    perf_analyzer: bool = False
    #: `harness.sweep` searches its model configuration on a server it starts (Model
    #: Analyzer-style) instead of load-testing one server of ours
    config_sweep: bool = False


@dataclass(frozen=True)
class EngineConfig:
    """Everything an engine needs to load; a pure value (the CLI reads the environment).

    The fields here are the same for every engine; `options` holds the engine's own.
    """

    engine: str
    model: str
    precision: str = "fp32"
    attn: str = "sdpa"
    device: str = "cpu"
    weights: str = "auto"
    model_path: str | None = None
    max_seq_len: int | None = None
    seed: int = 0
    artifact: str | None = None  # artifact folder, for engines that run exported formats
    variant: str = ""  # exporter variant of the artifact, e.g. "optimized" ONNX
    # left out of as_dict() while unset
    threads: int | None = None  # intra-op threads (onnx, eager); None: the runtime's default
    #: load an artifact with native code even when its seal does not verify here (recorded)
    trust_artifact: bool = False
    #: let transformers run code shipped in the model folder (recorded in config_json when set)
    trust_remote_code: bool = False
    options: EngineOptions = field(default_factory=EngineOptions)

    def __post_init__(self) -> None:
        get_spec(self.model)  # raises a ConfigError listing the known models
        for name, value, allowed in (
            ("precision", self.precision, PRECISIONS),
            ("attn", self.attn, ATTENTIONS),
            ("device", self.device, DEVICES),
            ("weights", self.weights, WEIGHTS),
        ):
            if value not in allowed:
                raise ConfigError(f"--{name} must be one of {', '.join(allowed)}; got {value!r}")
        self.options.check(self)
        if self.max_seq_len is not None and self.max_seq_len < 4:
            raise ConfigError(f"--max-seq-len must be >= 4; got {self.max_seq_len}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1; got {self.threads}")

    def as_dict(self) -> dict[str, Any]:
        """The config as recorded in config_json: common fields, then the engine's options."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        d.update(asdict(self.options))
        for late in ("threads", *self.options.recorded_when_set):
            if d[late] is None:
                del d[late]
        for flag in ("trust_artifact", "trust_remote_code"):
            if not d[flag]:
                del d[flag]
        return d


def check_task(name: str, engine_cls: type[Engine], spec: ModelSpec) -> None:
    """Refuse, in one line, an engine that does not run this model's task."""
    if spec.task not in engine_cls.tasks:
        why = f": {engine_cls.task_note}" if engine_cls.task_note else ""
        runs = ", ".join(t for t in engine_cls.tasks if t in TASKS)
        raise EngineError(
            f"--engine {name} does not run {spec.task} models ({spec.name}){why}; it runs {runs}"
        )


class Engine(ABC):
    """One runtime. `infer` is the timed region: model forward only, synchronised."""

    #: devices this runtime can execute on; the CLI refuses any other hardware
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    #: False only for engines that run no model (fake): no FLOPs or roofline are claimed
    computes_model: ClassVar[bool] = True
    #: artifact format this engine runs (exporters registry key), None for in-memory models
    artifact_format: ClassVar[str | None] = None
    #: (python module, pip extra) this engine imports; checked before any work is done
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: how to get the hardware/software this engine needs, shown when it cannot run here
    install_hint: ClassVar[str] = ""
    #: model tasks this runtime runs; `task_note` says why the others are refused
    tasks: ClassVar[tuple[str, ...]] = ("classification", "embedding")
    task_note: ClassVar[str] = ""
    #: this engine's own options (flags and config_json entries are generated from its fields);
    #: an engine whose `tasks` hold vision-embedding takes VisionOptions (or a subclass)
    Options: ClassVar[type[EngineOptions]] = EngineOptions
    #: the server this engine is a client of (None: it runs the model in this process); the
    #: harness picks how to sweep and load-test it from this, never from the engine's name
    remote_server: ClassVar[RemoteServer | None] = None
    #: True: a vision model runs only at the fixed (batch, image grid) buckets its artifact was
    #: exported with, so the harness asks the export for the workload's buckets
    fixed_image_buckets: ClassVar[bool] = False

    def __init__(self, config: EngineConfig):
        if type(config.options) is not self.Options:
            if type(config.options) is not EngineOptions:
                raise ConfigError(
                    f"--engine {config.engine} takes {self.Options.__name__}, "
                    f"got {type(config.options).__name__}"
                )
            config = replace(config, options=self.Options())  # the engine's defaults
        self.config = config
        self.options = config.options
        self.spec = get_spec(config.model)
        check_task(config.engine, type(self), self.spec)
        self.pipeline: Pipeline | VisionPipeline | None = None  # set by load()
        #: provenance recorded in every result row (weights, tokenizer, model source, ...)
        self.info: dict[str, Any] = {}

    @abstractmethod
    def load(self) -> None:
        """Load weights/artifacts and set `self.pipeline` and `self.info`."""

    @abstractmethod
    def infer(self, inputs: dict[str, np.ndarray]) -> Any:
        """Model forward on tokenized inputs; returns logits or hidden states."""

    @abstractmethod
    def close(self) -> None:
        """Release the model and any device memory."""

    @classmethod
    def preflight(cls, config: EngineConfig) -> None:
        """Cheap checks the CLI runs before any work (e.g. that a server is reachable)."""
        return None

    @classmethod
    def needs_artifact(cls, config: EngineConfig) -> bool:
        """Whether the harness must export (or verify) an artifact before this run."""
        return cls.artifact_format is not None

    # -- shared, not overridden ------------------------------------------------------------
    def _artifact(self) -> str:
        """The run's artifact folder, or a one-line error naming the export that writes one."""
        cfg = self.config
        if not cfg.artifact:
            raise EngineError(
                f"--engine {cfg.engine} needs an artifact; export one: python -m harness.export "
                f"--model {cfg.model} --format {self.artifact_format} --precision {cfg.precision}"
            )
        return cfg.artifact

    def _load_pipeline(self) -> None:
        tok = load_tokenizer(self.spec, self.config.model_path, self.config.trust_remote_code)
        self.info["tokenizer"] = tok.source
        if self.spec.task == "vision-embedding":
            vision = self.options
            if not isinstance(vision, VisionOptions):
                raise EngineError(
                    f"--engine {self.config.engine} lists vision-embedding in its tasks but its "
                    f"options ({type(vision).__name__}) are not VisionOptions"
                )
            budget, limit = vision.pixel_budget(), vision.image_limit()
            self.pipeline = VisionPipeline(self.spec, tok.tokenizer, budget, limit)
            self.info.update(
                min_pixels=budget.min_pixels, max_pixels=budget.max_pixels, max_image_pixels=limit
            )
            return
        self.pipeline = Pipeline(self.spec, tok.tokenizer, self.config.max_seq_len)

    @property
    def loaded(self) -> bool:
        return self.pipeline is not None

    def _ready(self) -> Pipeline | VisionPipeline:
        if self.pipeline is None:
            raise EngineError(f"engine {self.config.engine!r} used before load()")
        return self.pipeline

    def preprocess(self, texts: list[str]) -> Batch:
        return self._ready().preprocess(texts)

    def forward_shape(self, batch: int, seq: int) -> tuple[int, int] | None:
        """The (inputs, tokens) shape a forward of `batch` inputs padded to `seq` tokens
        computes, or None when no shape this engine takes holds them (after `load`).

        Free-shape engines (eager, OpenVINO, dynamic ONNX) compute what they are given, as
        here; fixed-shape ones (TensorRT profiles, Neuron buckets) override it with the next
        shape they hold, so an offline job packs batches that fit and counts the rows and
        tokens the engine pads on as padding."""
        return batch, seq

    # -- the batching protocol: what the dynamic batcher calls, and nothing else -----------
    def tokenize(self, inputs: list, *, truncate: bool = True) -> list:
        """Check and tokenize each input once (thread-safe): one item per input, for
        `collate`. `truncate`: cut inputs at the model's length, else refuse longer ones."""
        return self._ready().tokenize(inputs, truncate=truncate)

    def collate(self, items: list, inputs: list) -> Batch:
        """Pad `tokenize`'s items into one Batch for `infer`."""
        return self._ready().collate(items, inputs)

    def postprocess(self, outputs: Any, batch: Batch) -> Prediction:
        return self._ready().postprocess(outputs, batch)

    def predict(self, texts: list[str]) -> Prediction:
        """End to end: tokenize -> forward -> post-process."""
        batch = self.preprocess(texts)
        return self.postprocess(self.infer(batch.inputs), batch)

    def __enter__(self) -> Engine:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
