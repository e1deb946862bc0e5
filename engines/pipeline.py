"""Shared pre- and post-processing, so every engine tokenizes, pools and normalises identically."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import ConfigError, EngineError
from engines.models import ModelSpec

# guards the lazy creation of each pipeline's unpadded tokenizer copy (see Pipeline.tokenize)
_UNPADDED_LOCK = threading.Lock()


@dataclass
class Batch:
    """Tokenized inputs ready for `Engine.infer` (numpy int64 arrays, padded to the longest)."""

    texts: list[str]
    inputs: dict[str, np.ndarray]
    n_tokens: np.ndarray  # real (unpadded) tokens per input
    truncated: int = 0  # inputs cut at max_seq_len
    pixels: np.ndarray | None = None  # vision: decoded pixels per image
    visual_tokens: np.ndarray | None = None  # vision: merged visual tokens per image

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
    lengths: np.ndarray | None = None  # multi-vector: real vectors per input (rest is padding)


class InputTooLong(ConfigError):
    """An input with more tokens than the model takes, where inputs are not cut (HTTP 413)."""


def check_texts(texts: Any) -> None:
    """Raise ConfigError, naming the first bad input, unless `texts` is a non-empty list (or
    tuple) of strings: the type check every text input gets, once, where it is tokenized."""
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise ConfigError("inputs must be a list of strings")
    if not texts:
        raise ConfigError("inputs must not be empty")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ConfigError(f"input {i} is {type(t).__name__}, not a string")


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
        self._unpadded: Any = None  # tokenizer copy used by `tokenize`, made on first use

    def warmup_inputs(self) -> list[list[str]]:
        """Two batches of different shapes (compile's dynamic-shape warm-up)."""
        return [["warm up compile"], ["warm up the compiled graph with more tokens"] * 3]

    def preprocess(self, texts: list[str]) -> Batch:
        check_texts(texts)
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

    def tokenize(self, texts: list[str], *, truncate: bool = True) -> list[list[int]]:
        """Token ids per input, unpadded: checked and tokenized once. `truncate`: cut at
        max_seq_len exactly as `preprocess` does; else an input over it is refused
        (InputTooLong, naming it and its length).

        Safe to call from many threads at once, also while `preprocess` runs elsewhere (as long
        as the callers of one pipeline agree on `truncate`, as one batcher's do).
        """
        check_texts(texts)
        cut = dict(truncation=True, max_length=self.max_seq_len) if truncate else {}
        enc = self._unpadded_tokenizer()(
            list(texts),
            padding=False,
            return_attention_mask=False,
            return_overflowing_tokens=False,
            **cut,
        )
        ids = [list(x) for x in enc["input_ids"]]
        if not truncate:
            for i, x in enumerate(ids):
                if len(x) > self.max_seq_len:
                    raise InputTooLong(
                        f"input {i} has {len(x)} tokens; the model takes at most "
                        f"{self.max_seq_len} (start the server with --truncate to cut inputs)"
                    )
        return ids

    def collate(self, token_lists: list[list[int]], texts: list[str]) -> Batch:
        """Pad `tokenize` output to its longest input: the same Batch `preprocess(texts)` builds."""
        if len(token_lists) != len(texts):
            raise ConfigError(f"collate got {len(token_lists)} token lists for {len(texts)} texts")
        if not token_lists:
            raise ConfigError("inputs must not be empty")
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            raise EngineError(f"the tokenizer of {self.spec.name} has no pad token; cannot batch")
        lengths = [len(ids) for ids in token_lists]
        width = max(lengths)
        input_ids = np.full((len(token_lists), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(token_lists), width), dtype=np.int64)
        left = self.tokenizer.padding_side == "left"
        for i, (ids, n) in enumerate(zip(token_lists, lengths, strict=True)):
            if n:
                cols = slice(width - n, width) if left else slice(0, n)
                input_ids[i, cols] = ids
                mask[i, cols] = 1
        n_tokens = mask.sum(axis=1)
        truncated = int((n_tokens >= self.max_seq_len).sum())
        return Batch(
            list(texts), {"input_ids": input_ids, "attention_mask": mask}, n_tokens, truncated
        )

    def _unpadded_tokenizer(self) -> Any:
        # A fast tokenizer keeps padding/truncation as mutable state on its Rust backend and
        # flips it per call, so unpadded calls racing padded `preprocess` calls on one object
        # get each other's padding. `tokenize` therefore uses its own copy, set up once.
        # keyed on the tokenizer it copies, so a tokenizer swapped in later gets its own copy
        got = self._unpadded
        if got is None or got[0] is not self.tokenizer:
            with _UNPADDED_LOCK:
                got = self._unpadded
                if got is None or got[0] is not self.tokenizer:
                    tok = copy.deepcopy(self.tokenizer)
                    tok(["warm up"], padding=False, truncation=True, max_length=self.max_seq_len)
                    got = self._unpadded = (self.tokenizer, tok)
        return got[1]

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
        elif spec.pooling == "last":  # the last real token, with left or right padding
            m = batch.inputs["attention_mask"][:, : x.shape[1]]
            last = m.shape[1] - 1 - np.argmax(m[:, ::-1], axis=1)
            v = x[np.arange(x.shape[0]), last]
        else:
            v = x
        if spec.normalize:
            v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
        return Prediction(v.astype(np.float32, copy=False))
