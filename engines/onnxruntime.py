"""ONNX Runtime engine with CPU, CUDA or TensorRT execution providers."""

from __future__ import annotations

from typing import Any

import numpy as np

from engines.artifact import verify
from engines.base import Engine
from engines.errors import EngineError, MissingDependency
from engines.vision import ONNX_NOTE as VISION_ONNX_NOTE

_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class OnnxEngine(Engine):
    devices = ("cpu", "cuda")
    artifact_format = "onnx"
    task_note = VISION_ONNX_NOTE
    requires = (("onnxruntime", "onnx"),)

    def load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise MissingDependency("onnxruntime", "onnx") from e
        cfg = self.config
        provider = cfg.provider or cfg.device  # EngineConfig checked it matches the device
        if not cfg.artifact:
            raise EngineError(
                "--engine onnx needs an artifact; export one: python -m exporters "
                f"--model {cfg.model} --format onnx --precision {cfg.precision}"
            )
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
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if cfg.threads:
            opts.intra_op_num_threads = cfg.threads
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
            parity=m.parity,
            artifact=str(cfg.artifact),
        )

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {k: inputs[k] for k in self._inputs})[0]

    def close(self) -> None:
        self.session = None
