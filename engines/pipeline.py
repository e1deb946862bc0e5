"""Shared pre- and post-processing, so every engine tokenizes, pools and normalises identically."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.errors import ConfigError
from engines.models import ModelSpec


@dataclass
class Batch:
    """Tokenized inputs ready for `Engine.infer` (numpy int64 arrays, padded to the longest)."""

    texts: list[str]
    inputs: dict[str, np.ndarray]
    n_tokens: np.ndarray  # real (unpadded) tokens per input
    truncated: int = 0  # inputs cut at max_seq_len

    @property
    def size(self) -> int:
        return len(self.texts)

    @property
    def padded_tokens(self) -> int:
        return int(self.inputs["input_ids"].size)


@dataclass
class Prediction:
    """Post-processed outputs: class probabilities or (unit) embeddings, float32 on the host."""

    values: np.ndarray  # [B, num_labels] probs | [B, dim] | [B, T, dim] multi-vector
    labels: list[str] | None = None


def to_numpy(outputs: Any) -> np.ndarray:
    if hasattr(outputs, "detach"):  # torch tensor on any device
        return outputs.detach().float().cpu().numpy()
    return np.asarray(outputs, dtype=np.float32)


class Pipeline:
    """Tokenize -> (engine forward) -> pool / normalise / softmax."""

    def __init__(self, spec: ModelSpec, tokenizer: Any, max_seq_len: int | None = None):
        self.spec = spec
        self.tokenizer = tokenizer
        self.max_seq_len = int(max_seq_len or spec.max_seq_len)
        if self.max_seq_len < 4:
            raise ConfigError(f"max_seq_len must be >= 4, got {self.max_seq_len}")

    def preprocess(self, texts: list[str]) -> Batch:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise ConfigError("inputs must be a list of strings")
        if not texts:
            raise ConfigError("inputs must not be empty")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ConfigError(f"input {bad[0]} is not a string ({type(texts[bad[0]]).__name__})")
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_seq_len,
            return_tensors="np",
            return_overflowing_tokens=False,
        )
        inputs = {
            "input_ids": enc["input_ids"].astype(np.int64, copy=False),
            "attention_mask": enc["attention_mask"].astype(np.int64, copy=False),
        }
        n_tokens = inputs["attention_mask"].sum(axis=1)
        truncated = int((n_tokens >= self.max_seq_len).sum())
        return Batch(list(texts), inputs, n_tokens, truncated)

    def postprocess(self, outputs: Any, batch: Batch) -> Prediction:
        x = to_numpy(outputs)
        spec = self.spec
        if spec.task == "classification":
            z = x - x.max(axis=-1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=-1, keepdims=True)
            labels = [spec.labels[i] if i < len(spec.labels) else str(i) for i in p.argmax(-1)]
            return Prediction(p.astype(np.float32), labels)
        if spec.pooling == "cls":
            v = x[:, 0, :]
        elif spec.pooling == "mean":
            m = batch.inputs["attention_mask"][:, : x.shape[1], None].astype(np.float32)
            v = (x * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
        else:
            v = x
        if spec.normalize:
            v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
        return Prediction(v.astype(np.float32, copy=False))
