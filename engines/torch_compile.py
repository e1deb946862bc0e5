"""torch.compile (JIT, dynamic shapes) and AOTInductor packages (.pt2, Python-free deployable)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import ConfigError, HardwareMismatch
from engines.artifact import verify
from engines.base import COMPILE_MODES, Engine, VisionOptions, option
from engines.torch_eager import EagerEngine


@dataclass(frozen=True)
class CompileOptions(VisionOptions):
    """The compile mode, and the vision options (compile runs vision models as eager does)."""

    compile_mode: str = option(
        "default", flag="--compile-mode", help="compile engine: mode", choices=COMPILE_MODES
    )
    compile_backend: str | None = option(
        None,
        flag="--compile-backend",
        help="compile engine: torch.compile's backend (default inductor; aot_eager traces "
        "without generating code, tensorrt needs torch-tensorrt)",
    )
    recorded_when_set = (*VisionOptions.recorded_when_set, "compile_backend")

    def backend(self) -> str:
        return self.compile_backend or "inductor"

    def check(self, config) -> None:
        """A backend named on the command line must be one torch has (torch-tensorrt registers
        its own on import); inductor, the default, needs no look (no torch import here)."""
        super().check(config)
        name = self.compile_backend
        if name is None:
            return
        import torch

        if name in ("tensorrt", "torch_tensorrt"):
            try:
                import torch_tensorrt  # noqa: F401
            except ImportError:
                raise ConfigError(
                    f"--compile-backend {name} needs torch-tensorrt (pip install torch-tensorrt, "
                    "on a CUDA machine)"
                ) from None
        if name not in torch._dynamo.list_backends(exclude_tags=()):
            raise ConfigError(
                f"--compile-backend {name!r} is not a torch.compile backend here; this torch has "
                f"{', '.join(torch._dynamo.list_backends())} (and aot_eager, eager for tests)"
            )


class CompileEngine(EagerEngine):
    """Eager model + torch.compile(mode, dynamic=True); CUDA graphs come with reduce-overhead /
    max-autotune on GPU. Compilation happens in load(), timed, so it is never in a timed call."""

    Options = CompileOptions

    def load(self) -> None:
        super().load()
        import torch

        mode, backend = self.options.compile_mode, self.options.backend()
        if backend in ("tensorrt", "torch_tensorrt"):
            import torch_tensorrt  # noqa: F401  (registers the backend in this process)
        # torch refuses a mode with a backend other than inductor
        kw = {"mode": mode} if backend == "inductor" else {}
        self.model = torch.compile(self.model, backend=backend, dynamic=True, **kw)
        t0 = time.perf_counter()
        # two shapes so the dynamic-shape graph, not a specialised one, is compiled up front
        for texts in self._ready().warmup_inputs():
            b = self.preprocess(texts)
            self.infer(b.inputs)
        self.info.update(
            compile_mode=mode,
            compile_backend=backend,
            compile_seconds=round(time.perf_counter() - t0, 2),
        )


class AotiEngine(Engine):
    """Loads an AOTInductor package written by `python -m harness.export --format aoti`."""

    devices = ("cpu", "cuda")
    artifact_format = "aoti"
    task_note = (
        "torch.export cannot trace ColQwen2's data-dependent patch slicing; "
        "use --engine compile for vision models"
    )

    def load(self) -> None:
        import torch

        cfg = self.config
        self._artifact()
        m = verify(
            cfg.artifact,
            {"format": "aoti", "model": cfg.model, "precision": cfg.precision},
            trust=cfg.trust_artifact,
        )
        built = m.hardware or {}
        if built.get("device") != cfg.device or built.get("torch") != torch.__version__:
            raise HardwareMismatch(
                f"AOTInductor package {cfg.artifact} was built for {built.get('device')} with torch "
                f"{built.get('torch')}; this run is {cfg.device} with torch {torch.__version__}. "
                "Re-export it here."
            )
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise HardwareMismatch("this AOTInductor package needs a CUDA GPU; none is visible")
        self._torch = torch
        self._device = torch.device(cfg.device)
        self.runner = torch._inductor.aoti_load_package(f"{cfg.artifact}/model.pt2")
        self._load_pipeline()
        self.info.update(
            weights=m.weights,
            model_source=m.model_id,
            torch=torch.__version__,
            parity=m.parity,
            artifact=str(cfg.artifact),
            compile_seconds=m.export_seconds,
        )

    def infer(self, inputs: dict[str, np.ndarray]) -> Any:
        torch = self._torch
        with torch.inference_mode():
            ids = torch.from_numpy(inputs["input_ids"]).to(self._device)
            mask = torch.from_numpy(inputs["attention_mask"]).to(self._device)
            out = self.runner(ids, mask)
            if self._device.type == "cuda":
                torch.cuda.synchronize(self._device)
        return out[0] if isinstance(out, (list, tuple)) else out

    def close(self) -> None:
        self.runner = None
