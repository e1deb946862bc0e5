"""A real engine with fake compute: deterministic, configurable latency and no dependencies.

For tests and demos only. Every result it produces is labelled engine=fake, weights=none.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

import numpy as np

from core.errors import ConfigError
from engines.base import Engine, VisionOptions, option
from engines.models import TASKS


@dataclass(frozen=True)
class FakeOptions(VisionOptions):
    fake_latency_ms: float = option(
        2.0, flag="--fake-latency-ms", help="fake engine only: fixed latency per call"
    )
    fake_per_input_ms: float = option(
        0.2,
        flag="--fake-per-input-ms",
        help="fake engine only: extra latency per input in the batch",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fake_latency_ms < 0 or self.fake_per_input_ms < 0:
            raise ConfigError("fake engine latencies must be >= 0")


class FakeEngine(Engine):
    devices = ("cpu", "cuda", "neuron")
    computes_model = False
    tasks = TASKS
    Options = FakeOptions

    def load(self) -> None:
        self._load_pipeline()
        self.info.update(weights="none (fake engine)", model_source="fake")
        self._out_dim = (
            self.spec.num_labels if self.spec.task == "classification" else self.spec.dim
        )

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        ids = inputs["input_ids"]
        opts = self.options
        # sleep releases the GIL, like a real accelerator call would
        time.sleep((opts.fake_latency_ms + opts.fake_per_input_ms * ids.shape[0]) / 1000.0)
        rows = []
        for row, mask in zip(ids, inputs["attention_mask"], strict=True):
            seed = zlib.crc32(row[mask.astype(bool)].tobytes())
            rows.append(np.random.default_rng(seed).standard_normal(self._out_dim))
        out = np.asarray(rows, dtype=np.float32)
        if self.spec.task == "classification":
            return out
        # hidden states [B, T, dim]; CLS pooling only reads position 0
        t = 1 if self.spec.pooling == "cls" else ids.shape[1]
        return np.repeat(out[:, None, :], t, axis=1)

    def close(self) -> None:
        pass
