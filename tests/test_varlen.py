"""Packed tokens (--token-layout packed): the same outputs as the padded eager model."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import ConfigError, EngineError
from engines.registry import create_engine, engine_config
from tests.test_batcher import mixed_texts

MODELS = ["bge-base-tiny", "distilbert-sentiment-tiny"]


def loaded(model: str, layout: str, **kw):
    kw.setdefault("weights", "random")
    engine = create_engine(engine_config("eager", model, token_layout=layout, **kw))
    engine.load()
    return engine


@pytest.mark.parametrize("model", MODELS)
def test_packed_equals_padded_at_every_real_token(model):
    padded, packed = loaded(model, "padded"), loaded(model, "packed")
    # lengths repeat and differ, so both equal-length groups and padding are exercised
    texts = mixed_texts(9, seed=1) + ["same length a", "same length b"]
    batch = padded.pipeline.preprocess(texts)
    ref = padded.infer(batch.inputs).numpy()
    got = packed.infer(batch.inputs).numpy()
    assert ref.shape == got.shape
    if padded.spec.task == "embedding":
        mask = batch.inputs["attention_mask"].astype(bool)
        np.testing.assert_allclose(got[mask], ref[mask], rtol=1e-4, atol=1e-5)
        assert not got[~mask].any()  # padded positions are zeros, never computed
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    a, b = padded.predict(texts).values, packed.predict(texts).values
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.trained
def test_packed_equals_padded_on_trained_minilm(minilm_dir):
    kw = dict(model_path=str(minilm_dir), weights="auto")
    padded, packed = (
        loaded("all-minilm-l6", "padded", **kw),
        loaded("all-minilm-l6", "packed", **kw),
    )
    texts = mixed_texts(12, seed=2)
    a, b = padded.predict(texts).values, packed.predict(texts).values
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    assert cos.min() > 0.99999


def test_packed_is_refused_where_it_cannot_run():
    with pytest.raises(ConfigError, match="--token-layout"):
        engine_config("eager", "bge-base-tiny", token_layout="jagged")
    with pytest.raises(EngineError, match="packed tokens run bert, distilbert"):
        loaded("gte-modernbert-tiny", "packed")


def test_a_padded_run_with_much_padding_points_to_the_packed_layout(tmp_path, capsys):
    from harness.run import main

    argv = ["--engine", "eager", "--model", "distilbert-sentiment-tiny", "--weights", "random"]
    argv += ["--dataset", "synthetic", "--num-samples", "16", "--inputs-per-request", "8"]
    argv += ["--duration", "0.2", "--min-calls", "1", "--warmup", "0"]
    assert main([*argv, "--output-dir", str(tmp_path / "padded")]) == 0
    out = capsys.readouterr().out
    assert "--token-layout packed computes none of it" in out
    assert main([*argv, "--token-layout", "packed", "--output-dir", str(tmp_path / "p")]) == 0
    assert "--token-layout packed computes none of it" not in capsys.readouterr().out
