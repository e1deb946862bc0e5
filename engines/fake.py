"""A real engine with fake compute: deterministic, configurable latency and no dependencies.

For tests and demos only. Every result it produces is labelled engine=fake, weights=none.
"""

from __future__ import annotations

import time
import zlib

import numpy as np

from engines.base import Engine
from engines.models import TASKS


class FakeEngine(Engine):
    devices = ("cpu", "cuda", "neuron")
    computes_model = False
    tasks = TASKS

    def load(self) -> None:
        self._load_pipeline()
        self.info.update(weights="none (fake engine)", model_source="fake")
        self._out_dim = (
            self.spec.num_labels if self.spec.task == "classification" else self.spec.dim
        )

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        ids = inputs["input_ids"]
        cfg = self.config
        # sleep releases the GIL, like a real accelerator call would
        time.sleep((cfg.fake_latency_ms + cfg.fake_per_input_ms * ids.shape[0]) / 1000.0)
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
