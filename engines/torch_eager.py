"""Eager PyTorch engine: fp32 / fp16 / bf16, with a selectable attention implementation."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import EngineError, HardwareMismatch, MissingDependency
from engines.base import Engine, VisionOptions, option
from engines.models import TASKS, load_model

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
TOKEN_LAYOUTS = ("padded", "packed")


@dataclass(frozen=True)
class EagerOptions(VisionOptions):
    token_layout: str = option(
        "padded",
        flag="--token-layout",
        help="eager engine: packed runs BERT/DistilBERT on real tokens only (no FLOPs on "
        "padding; attention per input)",
        choices=TOKEN_LAYOUTS,
    )

    def padding_hint(self) -> str | None:
        if self.token_layout == "padded":
            return "--token-layout packed computes none of it (BERT / DistilBERT)"
        return None


class EagerEngine(Engine):
    devices = ("cpu", "cuda")
    tasks = TASKS
    Options = EagerOptions

    def load(self) -> None:
        import torch

        cfg = self.config
        if cfg.precision not in _DTYPES:
            raise EngineError(
                f"--engine eager runs {', '.join(_DTYPES)}; --precision {cfg.precision} is an "
                "exported format: use --engine onnx --precision int8"
            )
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise HardwareMismatch("--engine eager on cuda needs an NVIDIA GPU; none is visible")
        if cfg.attn == "flash_attention_2":
            if cfg.device != "cuda":
                raise HardwareMismatch("flash_attention_2 needs a CUDA GPU; use --attn sdpa")
            if importlib.util.find_spec("flash_attn") is None:
                raise MissingDependency("flash-attn", "flash")
            if cfg.precision == "fp32":
                raise EngineError("flash_attention_2 runs in fp16/bf16 only; add --precision bf16")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self._load_pipeline()
        try:
            loaded = load_model(
                self.spec,
                weights=cfg.weights,
                model_path=cfg.model_path,
                attn=cfg.attn,
                seed=cfg.seed,
                trust_remote_code=cfg.trust_remote_code,
            )
        except (ValueError, ImportError) as e:
            raise EngineError(f"could not build {self.spec.name} with attn={cfg.attn}: {e}") from e
        self._torch = torch
        self._device = torch.device(cfg.device)
        model = loaded.model.to(device=self._device, dtype=getattr(torch, _DTYPES[cfg.precision]))
        self.model = model.eval()
        self._packed = None
        if getattr(cfg.options, "token_layout", "padded") == "packed":
            from engines.unpadded import PackedEncoder  # imports torch: only when asked for

            if self._pipeline_padding_side() != "right":
                raise EngineError("--token-layout packed needs a right-padding tokenizer")
            self._packed = PackedEncoder(model, self.spec.family, self.spec.task)
        self.info.update(
            weights=loaded.weights,
            model_source=loaded.source,
            attn=getattr(model.config, "_attn_implementation", cfg.attn),
            torch=torch.__version__,
        )

    def infer(self, inputs: dict[str, np.ndarray]) -> Any:
        torch = self._torch
        dev = self._device
        with torch.inference_mode():
            feeds = {k: torch.from_numpy(v).to(dev, non_blocking=True) for k, v in inputs.items()}
            if self._packed is not None:
                result = self._packed(feeds["input_ids"], feeds["attention_mask"])
            else:
                result = self._forward(feeds)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
        return result

    def _forward(self, feeds: dict[str, Any]) -> Any:
        torch = self._torch
        out = self.model(**feeds)
        if self.spec.task == "classification":
            return out.logits
        if self.spec.multi_vector:  # ColQwen2: [B, T, 128], colpali-engine: the tensor
            return out if isinstance(out, torch.Tensor) else out.embeddings
        return out.last_hidden_state

    def _pipeline_padding_side(self) -> str:
        return getattr(self.pipeline.tokenizer, "padding_side", "right")

    def close(self) -> None:
        self.model = None
        if getattr(self, "_device", None) is not None and self._device.type == "cuda":
            self._torch.cuda.empty_cache()
