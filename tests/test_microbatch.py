"""Micro-batches: near-equal-length groups within the padding bound, run back to back."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import ConfigError
from engines.registry import engine_config
from serving.batcher import BatcherConfig, DynamicBatcher
from serving.policy import split_micro_batches
from tests.test_batcher import GatedEngine, mixed_texts


def padding(lengths, group) -> float:
    ns = [lengths[i] for i in group]
    return 1 - sum(ns) / (len(ns) * max(ns))


@pytest.mark.parametrize("bound", [0.0, 0.05, 0.2])
@pytest.mark.parametrize("seed", range(5))
def test_split_covers_the_batch_within_the_padding_bound(bound, seed):
    rng = np.random.default_rng(seed)
    lengths = [int(n) for n in rng.integers(3, 200, size=int(rng.integers(1, 64)))]
    groups = split_micro_batches(lengths, bound)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        assert padding(lengths, g) <= bound + 1e-12
    # shortest first, and no group could take the next group's shortest within the bound
    widths = [max(lengths[i] for i in g) for g in groups]
    assert widths == sorted(widths)
    for g, nxt in zip(groups, groups[1:], strict=False):
        head = min(nxt, key=lambda i: lengths[i])
        assert padding(lengths, (*g, head)) > bound


def test_equal_lengths_stay_one_batch_and_bad_bounds_are_refused():
    assert split_micro_batches([7] * 5, 0.0) == [(0, 1, 2, 3, 4)]
    assert split_micro_batches([], 0.05) == []
    with pytest.raises(ValueError, match="max_padding"):
        split_micro_batches([1, 2], 1.0)


@pytest.mark.parametrize(
    "field,value", [("micro_batches", "sometimes"), ("micro_batch_padding", 1.0)]
)
def test_config_refuses_bad_micro_batch_values(field, value):
    with pytest.raises(ConfigError, match=field):
        BatcherConfig(**{field: value})


def run_texts(mode: str, texts: list[str]) -> tuple[GatedEngine, object]:
    engine = GatedEngine(engine_config("fake", "distilbert-sentiment-tiny"))
    engine.load()
    engine.gate.clear()  # hold the forwards so the whole queue forms one batch
    batcher = DynamicBatcher(
        engine, BatcherConfig(max_batch_size=64, micro_batches=mode, max_queue_delay_ms=50)
    )
    batcher.start()
    try:
        first = batcher.submit(["hold"])  # occupies the forward thread while the rest queue
        assert engine.entered.wait(10)
        futures = [batcher.submit([t]) for t in texts]
        engine.gate.set()
        results = [f.result(10) for f in [first, *futures]]
    finally:
        batcher.stop()
    assert all(r.values.shape[0] == 1 for r in results)
    return engine, batcher.stats()


def test_batcher_runs_micro_batches_within_the_bound():
    texts = mixed_texts(48, seed=3)
    engine, whole = run_texts("off", texts)
    assert len(engine.shapes) == 2 and whole.padding_ratio > 0.2  # the same queue, one batch
    engine, split = run_texts("on", texts)
    assert split.inputs == whole.inputs == 49
    assert len(engine.shapes) > 2
    assert split.padding_ratio <= 0.05
    assert split.batches == len(engine.shapes)


def test_auto_keeps_the_fake_engines_batches_whole():
    # the fake engine computes nothing, so "auto" does not split its batches
    engine, stats = run_texts("auto", mixed_texts(16, seed=4))
    assert len(engine.shapes) == 2
