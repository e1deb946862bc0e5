"""ONNX Runtime engine with CPU, CUDA or TensorRT execution providers.

Text artifacts hold one graph with dynamic batch and sequence axes. Vision (ColQwen2) artifacts
hold one fixed-shape graph per (batch, image grid) bucket; a batch runs only on the bucket that
matches it exactly, and any other batch is refused (never resized or padded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import ConfigError, EngineError, MissingDependency
from engines.artifact import verify
from engines.base import PROVIDER_DEVICE, PROVIDERS, Engine, VisionOptions, option
from engines.models import TASKS
from engines.vision import bucket_pixels, describe_buckets

_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


#: --ort-graph-level -> the GraphOptimizationLevel member
_GRAPH_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


@dataclass(frozen=True)
class OnnxOptions(VisionOptions):
    provider: str | None = option(
        None,
        flag="--provider",
        help="onnx engine: ONNX Runtime execution provider (default: cpu on CPU, cuda on GPU)",
        choices=PROVIDERS,
    )

    graph_level: str = option(
        "all",
        flag="--ort-graph-level",
        help="onnx engine: ONNX Runtime graph optimisation level",
        choices=tuple(_GRAPH_LEVELS),
    )
    spinning: str = option(
        "on",
        flag="--ort-spinning",
        help="onnx engine: intra-op threads spin between ops (on: ONNX Runtime's default) or "
        "sleep (off: frees the cores for tokenization and HTTP)",
        choices=("on", "off"),
    )

    def check(self, config) -> None:
        if self.provider and PROVIDER_DEVICE[self.provider] != config.device:
            use = "cuda" if config.device == "cuda" else "cpu"
            raise ConfigError(
                f"--provider {self.provider} runs on {PROVIDER_DEVICE[self.provider]}, but this "
                f"run is on {config.device}; use --provider {use}"
            )


def session_options(ort, options: OnnxOptions, threads: int | None):
    """The SessionOptions the engine's options ask for: graph level, spinning, intra-op threads."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, _GRAPH_LEVELS[options.graph_level]
    )
    opts.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if options.spinning == "on" else "0"
    )
    if threads:
        opts.intra_op_num_threads = threads
    return opts


class OnnxEngine(Engine):
    devices = ("cpu", "cuda")
    artifact_format = "onnx"
    tasks = TASKS  # vision-embedding: per fixed image-size bucket
    fixed_image_buckets = True
    requires = (("onnxruntime", "onnx"),)
    Options = OnnxOptions

    def load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise MissingDependency("onnxruntime", "onnx") from e
        cfg = self.config
        provider = self.options.provider or cfg.device  # the options checked the device
        self._artifact()
        m = verify(
            cfg.artifact,
            {
                "format": "onnx",
                "model": cfg.model,
                "precision": cfg.precision,
                "variant": cfg.variant,
            },
        )
        wanted = _PROVIDERS[provider]
        available = ort.get_available_providers()
        if wanted not in available:
            raise MissingDependency(
                f"onnxruntime with {wanted} (this build has {', '.join(available)})", "gpu"
            )
        providers: list[Any] = [wanted]
        if provider == "tensorrt":
            providers = [(wanted, {"trt_fp16_enable": True}), "CUDAExecutionProvider"]
        opts = session_options(ort, self.options, cfg.threads)
        self._buckets: dict[tuple[int, int, int], Any] = {}
        if self.spec.task == "vision-embedding":
            entries = m.shape_profiles.get("image_buckets") or []
            if not entries:
                raise EngineError(
                    f"artifact {cfg.artifact} lists no image buckets; re-export it with "
                    "python -m harness.export --format onnx"
                )
            for e in entries:
                self._buckets[tuple(e["bucket"])] = ort.InferenceSession(
                    f"{cfg.artifact}/{e['file']}", sess_options=opts, providers=providers
                )
            self.session = next(iter(self._buckets.values()))
            self._bucket_inputs = {
                k: [i.name for i in v.get_inputs()] for k, v in self._buckets.items()
            }
        else:
            self.session = ort.InferenceSession(
                f"{cfg.artifact}/model.onnx", sess_options=opts, providers=providers
            )
        got = self.session.get_providers()
        # onnxruntime-gpu silently falls back to CPU when CUDA/TensorRT cannot load: refuse that
        if got[0] != wanted:
            raise EngineError(
                f"ONNX Runtime fell back to {got[0]} although {wanted} was requested; "
                "check the CUDA/cuDNN/TensorRT libraries onnxruntime-gpu needs"
            )
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._load_pipeline()
        self.info.update(
            weights=m.weights,
            model_source=m.model_id,
            onnxruntime=ort.__version__,
            provider=got[0],
            ort_session=f"graph {self.options.graph_level}, spinning {self.options.spinning}",
            parity=m.parity,
            artifact=str(cfg.artifact),
        )
        if self._buckets:
            self.info["onnx_buckets"] = describe_buckets(sorted(self._buckets))

    def bucket_for(self, inputs: dict[str, np.ndarray]) -> tuple[int, int, int]:
        """The vision bucket matching this collated batch exactly, or a one-line refusal."""
        grids = {tuple(int(x) for x in g) for g in inputs["image_grid_thw"]}
        have = describe_buckets(sorted(self._buckets))
        if len(grids) > 1:
            sizes = ", ".join(f"{h}x{w}" for _, h, w in sorted(grids))
            raise EngineError(
                f"ONNX vision buckets hold one image size per batch, but this batch mixes image "
                f"grids {sizes}; send same-size images or batch size 1 (buckets: {have})"
            )
        t, gh, gw = grids.pop()
        key = (len(inputs["image_grid_thw"]), gh, gw)
        if t != 1 or key not in self._buckets:
            w, h = bucket_pixels(gh, gw)
            raise EngineError(
                f"no ONNX bucket for batch {key[0]} x {w}x{h} px (grid {gh}x{gw}); this artifact "
                f"runs only {have}; export that bucket: python -m harness.export --model "
                f"{self.spec.name} --format onnx --image-buckets {key[0]}:{w}x{h}"
            )
        return key

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        if self._buckets:
            key = self.bucket_for(inputs)
            feeds = {k: inputs[k] for k in self._bucket_inputs[key]}
            return self._buckets[key].run(None, feeds)[0]
        return self.session.run(None, {k: inputs[k] for k in self._inputs})[0]

    def close(self) -> None:
        self.session = None
        self._buckets = {}
