"""Dynamic batcher: batching, ordering, padding, back-pressure, failures and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading

import numpy as np
import pytest

from core.errors import ConfigError
from engines import EngineConfig, create_engine
from engines.fake import FakeEngine
from engines.registry import engine_config
from serving.batcher import (
    BatcherConfig,
    BatcherStopped,
    DynamicBatcher,
    QueueFull,
    RequestTooLarge,
)
from workloads import WorkloadSpec
from workloads.text import synthetic

WORDS = "the product arrived broken great value service never again quality".split()


def fake_config(model="distilbert-sentiment-tiny", latency_ms=0.0, per_input_ms=0.0):
    return engine_config("fake", model, fake_latency_ms=latency_ms, fake_per_input_ms=per_input_ms)


def mixed_texts(n: int, seed: int = 0) -> list[str]:
    """Unique texts of 1 to 60 words."""
    rng = np.random.default_rng(seed)
    return [
        f"item {i} " + " ".join(rng.choice(WORDS, size=int(rng.integers(1, 60)))) for i in range(n)
    ]


class GatedEngine(FakeEngine):
    """The fake engine, plus: a gate that holds forwards, a log of batch shapes, a poison row."""

    def __init__(self, config: EngineConfig):
        super().__init__(config)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.shapes: list[tuple[int, int]] = []
        self.poison: tuple[int, ...] | None = None
        self.failed_rows: set[tuple[int, ...]] = set()

    def infer(self, inputs):
        self.entered.set()
        assert self.gate.wait(10)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        self.shapes.append(ids.shape)
        rows = {tuple(r[m.astype(bool)].tolist()) for r, m in zip(ids, mask, strict=True)}
        if self.poison is not None and self.poison in rows:
            self.failed_rows |= rows
            raise RuntimeError("poisoned batch")
        return super().infer(inputs)


def gated(config: EngineConfig | None = None) -> GatedEngine:
    engine = GatedEngine(config or fake_config())
    engine.load()
    return engine


@contextlib.contextmanager
def running(engine, **config):
    batcher = DynamicBatcher(engine, BatcherConfig(**config))
    batcher.start()
    try:
        yield batcher
    finally:
        if isinstance(engine, GatedEngine):
            engine.gate.set()
        batcher.stop(timeout_s=5)


def hold(engine: GatedEngine, batcher: DynamicBatcher):
    """Park the forward thread inside infer so that everything submitted next queues up."""
    engine.gate.clear()
    engine.entered.clear()
    primer = batcher.submit(["primer"])
    assert engine.entered.wait(5)
    return primer


def submit_from_threads(batcher, requests):
    futures = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def one(i):
        start.wait()
        futures[i] = batcher.submit(requests[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return futures


# -- config and pipeline ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [
        ("max_batch_size", 0),
        ("max_batch_size", True),
        ("max_batch_tokens", 0),
        ("max_queue_delay_ms", -1.0),
        ("max_queue_delay_ms", math.nan),
        ("max_queue_inputs", 0),
        ("max_request_inputs", 0),
        ("tokenize_workers", 0),
        ("length_aware", "yes"),
    ],
)
def test_invalid_config_names_the_field_range_and_value(field, value):
    with pytest.raises(ConfigError, match=rf"^{field} must .*; got {value!r}"):
        BatcherConfig(**{field: value})


@pytest.mark.parametrize("model", ["distilbert-sentiment-tiny", "gte-modernbert-tiny"])
def test_tokenize_then_collate_rebuilds_preprocess(model):
    engine = create_engine(fake_config(model))
    engine.load()
    pipe = engine.pipeline
    texts = ["", "short", "a somewhat longer text about delivery", "word " * 2000]
    ref = pipe.preprocess(texts)
    ids = pipe.tokenize(texts)
    assert [len(x) for x in ids] == ref.n_tokens.tolist()
    got = pipe.collate(ids, texts)
    for key in ("input_ids", "attention_mask"):
        assert got.inputs[key].dtype == ref.inputs[key].dtype
        assert np.array_equal(got.inputs[key], ref.inputs[key])
    assert np.array_equal(got.n_tokens, ref.n_tokens)
    assert (got.truncated, got.texts) == (ref.truncated, ref.texts) and got.truncated == 1
    for bad in ([], "a string", [1, 2], None):
        with pytest.raises(ConfigError):
            pipe.tokenize(bad)


# -- batching and correctness -------------------------------------------------------------------
def test_concurrent_single_submits_are_batched_and_match_predict():
    engine = create_engine(fake_config(latency_ms=5.0, per_input_ms=0.1))
    engine.load()
    texts = mixed_texts(64)
    with running(engine, max_queue_delay_ms=5.0) as b:
        futures = submit_from_threads(b, [[t] for t in texts])
        results = [f.result(timeout=10) for f in futures]
        stats = b.stats()
    assert max(stats.batch_size_histogram) > 1, stats.batch_size_histogram
    assert sum(k * v for k, v in stats.batch_size_histogram.items()) == stats.inputs == 64
    assert stats.requests_completed == 64 and stats.pending_requests == 0
    assert stats.queue_depth == 0 and stats.forward_ms.count == stats.batches
    assert stats.padding_ratio == pytest.approx(1 - stats.useful_tokens / stats.padded_tokens)
    for text, got in zip(texts, results, strict=True):
        ref = engine.predict([text])
        assert np.array_equal(got.values, ref.values) and got.labels == ref.labels


@pytest.mark.parametrize("length_aware", [True, False])
def test_multi_input_requests_come_back_whole_and_in_order(length_aware):
    engine = create_engine(fake_config("bge-base-tiny", latency_ms=2.0))
    engine.load()
    texts = mixed_texts(120, seed=1)
    requests, i = [], 0
    for size in [1, 5, 2, 9, 3, 7, 1, 4, 8, 6] * 2:
        requests.append(texts[i : i + size])
        i += size
    with running(engine, max_batch_size=4, length_aware=length_aware) as b:
        futures = submit_from_threads(b, requests)
        results = [f.result(timeout=10) for f in futures]
        assert b.stats().batches > 1
    for req, got in zip(requests, results, strict=True):
        ref = engine.predict(req)
        assert got.values.shape == (len(req), 64) and got.labels is None
        assert np.array_equal(got.values, ref.values)


def test_asubmit_resolves_to_the_same_predictions():
    engine = create_engine(fake_config(latency_ms=2.0))
    engine.load()
    requests = [mixed_texts(3, seed=s) for s in range(16)]

    async def main(b):
        return await asyncio.gather(*(b.asubmit(r) for r in requests))

    with running(engine) as b:
        results = asyncio.run(main(b))
    for req, got in zip(requests, results, strict=True):
        ref = engine.predict(req)
        assert np.array_equal(got.values, ref.values) and got.labels == ref.labels


def test_tiny_eager_model_gives_the_same_results_batched():
    engine = create_engine(EngineConfig(engine="eager", model="bge-base-tiny"))
    engine.load()
    try:
        requests = [mixed_texts(n, seed=n) for n in (1, 3, 1, 2, 5, 1, 4, 1)]
        with running(engine, max_batch_size=8, max_queue_delay_ms=20.0) as b:
            results = [f.result(timeout=20) for f in submit_from_threads(b, requests)]
            assert max(b.stats().batch_size_histogram) > 1
        for req, got in zip(requests, results, strict=True):
            np.testing.assert_allclose(got.values, engine.predict(req).values, atol=1e-5)
    finally:
        engine.close()


# -- padding and the token budget ---------------------------------------------------------------
def padding_ratio_on_seed_mix(length_aware: bool) -> tuple[float, list[tuple[int, int]]]:
    """Submit seed 000's classification length mix in one order, all queued before any runs."""
    engine = gated()
    work = synthetic(
        WorkloadSpec(task="classification", n=256, seed=0), engine.pipeline.tokenizer, 512
    )
    with running(engine, max_batch_size=32, length_aware=length_aware) as b:
        hold(engine, b)
        futures = [b.submit([t]) for t in work.texts]
        engine.gate.set()
        for f in futures:
            f.result(timeout=10)
        stats = b.stats()
    primer = len(engine.pipeline.tokenize(["primer"])[0])
    assert stats.inputs == 257 and stats.useful_tokens == int(work.token_counts.sum()) + primer
    return stats.padding_ratio, engine.shapes


def test_length_aware_batching_cuts_padding_against_fifo():
    fifo, fifo_shapes = padding_ratio_on_seed_mix(length_aware=False)
    aware, aware_shapes = padding_ratio_on_seed_mix(length_aware=True)
    # the same inputs in the same number of full batches; only the grouping differs
    assert sorted(r for r, _ in fifo_shapes) == sorted(r for r, _ in aware_shapes)
    # measured: FIFO 0.476, length-aware 0.207 (sorting the whole backlog would give 0.151)
    assert aware < 0.5 * fifo, f"padding ratio: length-aware {aware:.3f}, FIFO {fifo:.3f}"


@pytest.mark.parametrize("length_aware", [True, False])
def test_no_batch_exceeds_the_token_budget_unless_alone(length_aware):
    engine = gated()
    work = synthetic(
        WorkloadSpec(task="classification", n=96, seed=0), engine.pipeline.tokenizer, 512
    )
    texts = work.texts[:48] + ["word " * 2000] + work.texts[48:]  # 512 tokens after truncation
    budget = 400
    with running(engine, max_batch_tokens=budget, length_aware=length_aware) as b:
        hold(engine, b)
        futures = [b.submit([t]) for t in texts]
        engine.gate.set()
        for f in futures:
            f.result(timeout=10)
        stats = b.stats()
    shapes = engine.shapes[1:]  # after the primer
    assert (1, 512) in shapes
    assert all(rows * cols <= budget for rows, cols in shapes if rows > 1), shapes
    assert max(rows for rows, _ in shapes) > 1
    assert stats.padded_tokens == sum(r * c for r, c in engine.shapes)


# -- back-pressure, failures, shutdown ----------------------------------------------------------
def test_full_queue_rejects_at_once_and_drops_nothing():
    engine = gated()
    with running(engine, max_queue_inputs=8, max_request_inputs=4) as b:
        hold(engine, b)
        accepted = [b.submit(mixed_texts(3, seed=1)), b.submit(mixed_texts(3, seed=2))]
        # the forward pass stays parked, so no room can appear: a submit that waited for room
        # instead of refusing at once would never return
        with pytest.raises(QueueFull) as err:
            b.submit(mixed_texts(3, seed=3))
        assert not engine.gate.is_set() and engine.shapes == []
        assert b.stats().queue_depth == 6  # nothing admitted, nothing dropped to make room
        assert err.value.retry_after_s > 0 and "max_queue_inputs=8" in err.value.reason
        accepted += [b.submit(["one more"]), b.submit(["and one more"])]
        with pytest.raises(QueueFull):
            b.submit(["no room"])
        stats = b.stats()
        assert (stats.queue_depth, stats.rejected) == (8, 2)
        engine.gate.set()
        for f in accepted:
            assert f.result(timeout=10).values.shape[0] in (1, 3)
        assert b.submit(["room again"]).result(timeout=10).values.shape == (1, 3)
        assert b.stats().queue_depth == 0


def test_engine_failure_fails_exactly_the_affected_requests():
    engine = gated()
    engine.poison = tuple(engine.pipeline.tokenize(["poison pill"])[0])
    texts = mixed_texts(40, seed=4)
    requests = [[t] for t in texts[:30]] + [texts[30:33] + ["poison pill"], ["poison pill"]]
    with running(engine, max_batch_size=4, length_aware=False) as b:
        hold(engine, b)
        futures = [b.submit(r) for r in requests]
        engine.gate.set()
        concurrent_done = [f.exception(timeout=10) for f in futures]
        failed_rows = set(engine.failed_rows)
        for req, f, exc in zip(requests, futures, concurrent_done, strict=True):
            rows = {tuple(ids) for ids in engine.pipeline.tokenize(req)}
            if rows & failed_rows:
                assert isinstance(exc, RuntimeError) and "poisoned batch" in str(exc)
            else:
                assert exc is None
                assert np.array_equal(f.result().values, engine.predict(req).values)
        assert isinstance(concurrent_done[-1], RuntimeError)
        assert sum(e is None for e in concurrent_done) >= 20
        # the batcher keeps serving
        again = b.submit(texts[35:38]).result(timeout=10)
        assert np.array_equal(again.values, engine.predict(texts[35:38]).values)
        stats = b.stats()
    assert stats.failed_batches >= 1
    assert stats.requests_failed == sum(e is not None for e in concurrent_done)


def test_stop_drains_what_is_queued():
    engine = create_engine(fake_config(latency_ms=10.0))
    engine.load()
    b = DynamicBatcher(engine, BatcherConfig(max_batch_size=4))
    b.start()
    futures = [b.submit(mixed_texts(4, seed=s)) for s in range(10)]
    b.stop(timeout_s=5)
    assert all(f.result(timeout=0).values.shape == (4, 3) for f in futures)
    with pytest.raises(BatcherStopped):
        b.submit(["too late"])


def test_stop_fails_what_cannot_finish_and_leaves_nothing_hanging():
    engine = gated()
    b = DynamicBatcher(engine, BatcherConfig(max_batch_size=2))
    b.start()
    primer = hold(engine, b)
    futures = [primer] + [b.submit(mixed_texts(3, seed=s)) for s in range(10)]
    stopper = threading.Thread(target=b.stop, kwargs={"timeout_s": 0.3}, daemon=True)
    stopper.start()
    stopper.join(30)  # a bound on a hang, not on speed: the parked forward pass never returns
    # stop returned and gave up on the forward pass still parked in infer
    assert not stopper.is_alive()
    assert engine.shapes == [] and not engine.gate.is_set()
    assert all(f.done() for f in futures)
    assert all(isinstance(f.exception(), BatcherStopped) for f in futures)
    stats = b.stats()
    assert (stats.queue_depth, stats.pending_requests) == (0, 0)
    engine.gate.set()  # let the parked forward thread finish; its results go nowhere


def test_a_cancelled_request_is_not_run():
    engine = gated()
    with running(engine) as b:
        hold(engine, b)
        doomed = b.submit(["cancel me"])
        kept = b.submit(["keep me"])
        assert doomed.cancel()
        assert b.stats().queue_depth == 1
        engine.gate.set()
        assert kept.result(timeout=10).values.shape == (1, 3)
        assert b.stats().inputs == 2  # the primer and "keep me"


def test_oversized_and_invalid_requests_are_refused():
    engine = create_engine(fake_config())
    engine.load()
    b = DynamicBatcher(engine, BatcherConfig(max_request_inputs=4))
    with pytest.raises(BatcherStopped, match="not running"):
        b.submit(["before start"])
    with running(engine, max_request_inputs=4) as b:
        with pytest.raises(RequestTooLarge, match="max_request_inputs=4") as err:
            b.submit(["x"] * 5)
        assert isinstance(err.value, ValueError)
        for bad in ([], "a string", [1, 2], None):
            with pytest.raises(ConfigError):
                b.submit(bad)
        assert b.stats().queue_depth == 0
        assert b.submit(["fine"]).result(timeout=10).values.shape == (1, 3)
    with running(engine, max_queue_inputs=3) as b:  # could never be admitted: not a 429
        with pytest.raises(RequestTooLarge, match="max_queue_inputs=3"):
            b.submit(["x"] * 4)
