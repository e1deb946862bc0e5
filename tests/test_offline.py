"""The offline job (serving.bulk) and `harness.run --scenario offline`: batches, shapes, order,
padding and the row's columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import ConfigError, EngineError
from engines import create_engine
from engines.registry import engine_config
from serving.bulk import BulkRunner, JobLimits, Window, plan_batches

# ---- batch planning


def padded(lengths, batches, shape=lambda b, s: (b, s)) -> float:
    useful = sum(lengths)
    computed = 0
    for idx in batches:
        rows, cols = shape(len(idx), max(lengths[i] for i in idx))
        computed += rows * cols
    return 1 - useful / computed


def test_batches_are_sorted_by_length_and_respect_both_caps():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(5, 300, 500)]
    batches = plan_batches(lengths, 32, 2048)
    assert sorted(i for b in batches for i in b) == list(range(500))  # each input once
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) <= 32 and (len(b) * longest <= 2048 or len(b) == 1)
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
    assert lengths[batches[0][0]] == max(lengths)  # the longest first: memory fails at once
    assert padded(lengths, batches) < 0.05


def test_the_padding_cap_ends_batches_in_a_long_tail():
    lengths = [10] * 40 + [100, 60, 30]
    free = plan_batches(lengths, 64, 10**6)
    assert len(free) == 1 and padded(lengths, free) > 0.5
    capped = plan_batches(lengths, 64, 10**6, max_padding=0.05)
    assert [len(b) for b in capped] == [1, 1, 1, 40]
    assert padded(lengths, capped) == 0


def test_an_input_over_the_budget_still_forms_a_batch():
    assert plan_batches([500, 4, 4], 8, 100) == [[0], [1, 2]]


def test_fixed_shapes_round_batches_up_to_the_engines_buckets():
    from engines.neuron import pick_bucket

    buckets = [(1, 64), (4, 64), (4, 128), (8, 128)]

    def shape(b, s):
        try:
            return pick_bucket(buckets, b, s)
        except EngineError:
            return None

    lengths = [100] * 10 + [20] * 6
    # no bucket holds 9 rows of 100 tokens; the padding cap ends the next batch at the 20s
    batches = plan_batches(lengths, 32, 10**6, shape, max_padding=0.05)
    assert [len(b) for b in batches] == [8, 2, 6]
    # rows of 20 tokens in a bucket of 128: the engine's padding, counted, not capped
    assert padded(lengths, batches, shape) == pytest.approx(1 - 1120 / (1024 + 512 + 1024))
    assert plan_batches(lengths, 32, 1024, shape)[0] == list(range(8))  # 8 x 128 fits 1024
    with pytest.raises(EngineError, match="no shape that holds an input of 200 tokens"):
        plan_batches([200], 8, 10**6, shape)


def test_engines_declare_the_shapes_they_compute():
    from engines.neuron import NeuronEngine
    from engines.tensorrt import TensorRTEngine
    from engines.torch_eager import EagerEngine

    eager = EagerEngine.__new__(EagerEngine)
    assert eager.forward_shape(3, 17) == (3, 17)  # free shapes
    neuron = NeuronEngine.__new__(NeuronEngine)
    neuron._buckets, neuron._cores = [(1, 128), (8, 128), (8, 512)], 1
    assert neuron.forward_shape(3, 100) == (8, 128)
    assert neuron.forward_shape(9, 100) is None
    neuron._cores = 2
    assert neuron.forward_shape(16, 100) == (16, 128)  # split over two cores of batch 8
    trt = TensorRTEngine.__new__(TensorRTEngine)
    trt._bounds = {n: [(1, 16), (8, 128), (32, 512)] for n in ("input_ids", "attention_mask")}
    assert trt.forward_shape(4, 10) == (4, 16)  # the profile's minimum sequence
    assert trt.forward_shape(4, 300) == (4, 300)
    assert trt.forward_shape(33, 10) is None and trt.forward_shape(4, 513) is None


def test_limits_are_checked_in_one_line():
    with pytest.raises(ConfigError, match="--max-batch-tokens must be an integer >= 1"):
        JobLimits(max_batch_tokens=0)
    with pytest.raises(ConfigError, match="--max-batch-padding must be a number in"):
        JobLimits(max_batch_padding=1.5)


# ---- the runner


@pytest.fixture(scope="module")
def fake():
    with create_engine(engine_config("fake", "bge-base-tiny", fake_latency_ms=0.5)) as e:
        yield e


def texts_of(n: int) -> list[str]:
    rng = np.random.default_rng(1)
    words = "a river city music long short film plot".split()
    return [" ".join(rng.choice(words, size=int(k))) for k in rng.integers(1, 80, n)]


def test_outputs_come_back_in_input_order_window_by_window(fake):
    texts = texts_of(300)
    windows = [Window(s, texts[s : s + 64]) for s in range(0, 300, 64)]
    got, batches = [], []
    stats = BulkRunner(fake, JobLimits(max_batch_size=16)).run(
        windows, lambda r: got.append(r), batches.append
    )
    assert [r.start for r in got] == [0, 64, 128, 192, 256] and len(got[-1]) == 44
    values = np.concatenate([r.values for r in got])
    want = np.concatenate([fake.predict([t]).values for t in texts])
    assert np.allclose(values, want, atol=1e-6)
    assert sum(batches) == 300 == stats.inputs and stats.padding_ratio < 0.05
    assert all(b.inputs <= 16 for b in stats.batches)


def test_a_job_stops_where_its_callback_says(fake):
    def endless():
        s = 0
        while True:
            yield Window(s, ["some text", "more text here"])
            s += 2

    seen = []
    BulkRunner(fake).run(endless(), lambda r: seen.append(r.start) or len(seen) == 3)
    assert seen == [0, 2, 4]


def test_a_tokenizer_failure_reaches_the_caller(fake):
    def broken():
        yield Window(0, ["fine"])
        raise RuntimeError("the input file went away")

    with pytest.raises(RuntimeError, match="went away"):
        BulkRunner(fake).run(broken(), lambda r: None)


def test_multi_vector_models_are_refused():
    from types import SimpleNamespace

    from engines.models import get_spec

    with pytest.raises(ConfigError, match="single-vector"):
        BulkRunner(SimpleNamespace(spec=get_spec("colqwen2-tiny")))


# ---- harness.run --scenario offline


def run_cli(capsys, *argv):
    from harness.run import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out + out.err


QUICK = ["--dataset", "synthetic", "--weights", "random", "--duration", "0.3", "--warmup", "1"]


@pytest.mark.parametrize("model", ["distilbert-sentiment-tiny", "bge-base-tiny"])
def test_offline_rows_pad_little_and_carry_their_columns(capsys, tmp_path, model):
    argv = ["--scenario", "offline", "--model", model, *QUICK, "--inputs-per-request", "8,32"]
    code, out = run_cli(capsys, *argv, "--output-dir", tmp_path)
    assert code == 0, out
    assert "offline job" in out and "outputs in input order" in out
    df = pd.read_parquet(tmp_path / "results.parquet")
    assert df["batch_size"].tolist() == [8, 32] and (df["mode"] == "offline").all()
    assert (df["padding_ratio"] <= 0.05).all(), df["padding_ratio"].tolist()
    for col in ("throughput_avg", "1B_cost", "floor_1B_cost", "efficiency", "p99_latency_ms"):
        assert (df[col] > 0).all(), col
    assert (df["throughput_req_per_sec"] == df["throughput_avg"]).all()
    assert (df["throughput_method"] == "job").all() and (df["n_samples"] > 0).all()
    for col in ("throughput_ci_method", "throughput_windows", "p99_upper_ms", "p99_resolved"):
        assert col in df.columns
    assert (df["latency_ms_p50"] <= df["p50_latency_ms"]).all()  # forward within the batch
    assert df["quality_passed"].all() and (df["quality_n"] == 64).all()
    if model == "bge-base-tiny":
        assert (df["quality_min_cosine"] >= 0.9999).all()
    else:
        assert (df["quality_label_agreement"] == 1.0).all()
    # resumed like any run: nothing measured twice
    code, out = run_cli(capsys, *argv, "--output-dir", tmp_path)
    assert code == 0 and "already measured" in out


@pytest.mark.parametrize(
    "extra,expected",
    [
        (["--n-models", "2"], "runs one model copy"),
        (["--max-batch-tokens", "0"], "--max-batch-tokens must be >= 1"),
        (["--max-batch-padding", "2"], "--max-batch-padding must be in [0, 1]"),
    ],
)
def test_offline_refuses_what_it_does_not_run(capsys, tmp_path, extra, expected):
    argv = ["--scenario", "offline", "--engine", "fake", "--model", "distilbert-sentiment-tiny"]
    code, out = run_cli(capsys, *argv, *QUICK, *extra, "--output-dir", tmp_path)
    assert code == 2 and expected in out, out
