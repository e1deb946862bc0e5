"""The Engine ABC: load / infer (the timed forward) / close, with shared pre/post-processing."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from engines.errors import ConfigError, EngineError
from engines.models import TASKS, WEIGHTS, ModelSpec, get_spec, load_tokenizer
from engines.pipeline import Batch, Pipeline, Prediction
from engines.vision import DEFAULT_MAX_IMAGE_PIXELS, PixelBudget, VisionPipeline

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
PROVIDERS = ("cpu", "cuda", "tensorrt")  # ONNX Runtime execution providers
PROVIDER_DEVICE = {"cpu": "cpu", "cuda": "cuda", "tensorrt": "cuda"}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
ATTENTIONS = ("sdpa", "eager", "flash_attention_2")
DEVICES = ("cpu", "cuda", "neuron")


@dataclass(frozen=True)
class EngineConfig:
    """Everything an engine needs to load; a pure value (the CLI reads the environment)."""

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
    provider: str | None = None  # onnx engine: ONNX Runtime provider (None: the device's own)
    compile_mode: str = "default"  # compile engine: torch.compile mode
    fake_latency_ms: float = 2.0  # fake engine only
    fake_per_input_ms: float = 0.2  # fake engine only
    # added later; left out of as_dict() while unset, so older result rows keep their keys
    threads: int | None = None  # intra-op threads (onnx, eager); None: the runtime's default
    url: str | None = None  # triton engine: the server (None: start the bundled tritonserver)
    transport: str | None = None  # triton engine: http | grpc (None: http)
    # vision models: the image processor's resize budget, and the decoded-image pixel limit
    min_pixels: int | None = None
    max_pixels: int | None = None
    max_image_pixels: int | None = None
    #: load an artifact with native code even when its seal does not verify here (recorded)
    trust_artifact: bool = False

    def __post_init__(self) -> None:
        get_spec(self.model)  # raises a ConfigError listing the known models
        for name, value, allowed in (
            ("precision", self.precision, PRECISIONS),
            ("attn", self.attn, ATTENTIONS),
            ("device", self.device, DEVICES),
            ("weights", self.weights, WEIGHTS),
            ("provider", self.provider or "cpu", PROVIDERS),
            ("compile-mode", self.compile_mode, COMPILE_MODES),
        ):
            if value not in allowed:
                raise ConfigError(f"--{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.provider and PROVIDER_DEVICE[self.provider] != self.device:
            raise ConfigError(
                f"--provider {self.provider} runs on {PROVIDER_DEVICE[self.provider]}, but this "
                f"run is on {self.device}; use --provider {'cuda' if self.device == 'cuda' else 'cpu'}"
            )
        if self.max_seq_len is not None and self.max_seq_len < 4:
            raise ConfigError(f"--max-seq-len must be >= 4; got {self.max_seq_len}")
        if self.fake_latency_ms < 0 or self.fake_per_input_ms < 0:
            raise ConfigError("fake engine latencies must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1; got {self.threads}")
        if self.transport not in (None, "http", "grpc"):
            raise ConfigError(f"--transport must be http or grpc; got {self.transport!r}")
        if self.max_image_pixels is not None and self.max_image_pixels < 1:
            raise ConfigError(f"--max-image-pixels must be >= 1; got {self.max_image_pixels}")
        if self.min_pixels is not None or self.max_pixels is not None:
            self.pixel_budget()  # validates

    def pixel_budget(self) -> PixelBudget:
        """The vision resize budget (defaults where unset); raises ConfigError when invalid."""
        d = PixelBudget()
        return PixelBudget(self.min_pixels or d.min_pixels, self.max_pixels or d.max_pixels)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for late in ("threads", "url", "transport", "min_pixels", "max_pixels", "max_image_pixels"):
            if d[late] is None:
                del d[late]
        if not d["trust_artifact"]:
            del d["trust_artifact"]
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
    #: the kind of server this engine is a client of (None: it runs the model in this process);
    #: the harness picks how to sweep and load-test it from this, never from the engine's name
    remote_server: ClassVar[str | None] = None

    def __init__(self, config: EngineConfig):
        self.config = config
        self.spec = get_spec(config.model)
        check_task(config.engine, type(self), self.spec)
        self.pipeline: Pipeline | Any = None  # Pipeline, or VisionPipeline for vision models
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

    # -- engines that call a server (triton) override these ---------------------------------
    def server_stats(self) -> dict[str, float] | None:
        """Cumulative server-side counters; None for engines that run in this process."""
        return None

    def server_delta(self, before: dict, after: dict) -> dict[str, Any]:
        """Result columns (server_* ) for the work between two `server_stats` snapshots."""
        return {}

    # -- shared, not overridden ------------------------------------------------------------
    def _load_pipeline(self) -> None:
        tok = load_tokenizer(self.spec, self.config.model_path)
        self.info["tokenizer"] = tok.source
        if self.spec.task == "vision-embedding":
            cfg = self.config
            budget = cfg.pixel_budget()
            limit = cfg.max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS
            self.pipeline = VisionPipeline(self.spec, tok.tokenizer, budget, limit)
            self.info.update(
                min_pixels=budget.min_pixels, max_pixels=budget.max_pixels, max_image_pixels=limit
            )
            return
        self.pipeline = Pipeline(self.spec, tok.tokenizer, self.config.max_seq_len)

    def _ready(self) -> Pipeline:
        if self.pipeline is None:
            raise EngineError(f"engine {self.config.engine!r} used before load()")
        return self.pipeline

    def preprocess(self, texts: list[str]) -> Batch:
        return self._ready().preprocess(texts)

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
