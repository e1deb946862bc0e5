import numpy as np
import pytest

from engines import create_engine
from engines.fake import FakeEngine
from engines.registry import engine_config
from exporters.base import PARITY_SHAPES
from exporters.parity import THRESHOLDS, compare, parity_texts


class Noisy(FakeEngine):
    """A fake export whose outputs drift from the reference by `noise`."""

    noise = 0.0

    def infer(self, inputs):
        out = super().infer(inputs)
        rng = np.random.default_rng(0)
        return out + self.noise * rng.standard_normal(out.shape).astype(np.float32)


def engines(model, noise):
    cfg = engine_config("fake", model, fake_latency_ms=0, fake_per_input_ms=0)
    ref = create_engine(cfg)
    cand = Noisy(cfg)
    cand.noise = noise
    ref.load()
    cand.load()
    return ref, cand


def test_parity_inputs_cover_batch_1_and_the_modernbert_window(tiny_tokenizer):
    assert (1, 16) in PARITY_SHAPES and max(t for _, t in PARITY_SHAPES) > 128
    texts = parity_texts(tiny_tokenizer)
    counts = [len(x) for x in tiny_tokenizer(texts[-1])["input_ids"]]
    assert max(counts) == 200 and len(set(counts)) > 1  # padding is exercised


def test_identical_outputs_pass():
    r = compare(*engines("bge-base-tiny", 0.0), "fp32")
    assert r["passed"] and r["metric"].startswith("min_cos=1.0")
    assert len(r["shapes"]) == 3


def test_divergent_embeddings_fail_and_say_where():
    r = compare(*engines("bge-base-tiny", 0.5), "fp32")
    assert not r["passed"]
    assert "min cosine" in r["failures"][0] and "batch 1 x 16 tokens" in r["failures"][0]


def test_classification_uses_dprob_and_top1():
    ok = compare(*engines("distilbert-sentiment-tiny", 1e-6), "fp32")
    assert ok["passed"] and "top1=" in ok["metric"]
    bad = compare(*engines("distilbert-sentiment-tiny", 1.0), "int8")
    assert not bad["passed"]
    assert any("Δprob" in f for f in bad["failures"])


def test_thresholds_loosen_with_precision():
    assert THRESHOLDS["fp32"].min_cosine > THRESHOLDS["fp16"].min_cosine
    assert THRESHOLDS["fp16"].min_cosine > THRESHOLDS["int8"].min_cosine
    assert THRESHOLDS["int8"].max_dprob > THRESHOLDS["fp32"].max_dprob


@pytest.mark.parametrize("noise,precision,passed", [(0.03, "int8", True), (0.03, "fp32", False)])
def test_same_drift_is_judged_by_precision(noise, precision, passed):
    assert compare(*engines("bge-base-tiny", noise), precision)["passed"] is passed
