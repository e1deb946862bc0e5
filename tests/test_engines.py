import numpy as np
import pytest

from core.errors import ConfigError
from engines import EngineConfig, create_engine, engine_class
from engines.registry import engine_config


@pytest.fixture(scope="module")
def eager_cls():
    e = create_engine(EngineConfig(engine="eager", model="distilbert-sentiment-tiny"))
    e.load()
    yield e
    e.close()


def test_eager_classification_outputs_are_probabilities(eager_cls):
    p = eager_cls.predict(["great product", "terrible service, never again", ""])
    assert p.values.shape == (3, 3)
    assert np.allclose(p.values.sum(axis=1), 1.0, atol=1e-5)
    assert set(p.labels) <= {"positive", "neutral", "negative"}
    assert eager_cls.info["weights"] == "random"
    assert eager_cls.info["tokenizer"].startswith("fallback")


@pytest.mark.parametrize("model", ["gte-modernbert-tiny", "bge-base-tiny"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_eager_embeddings_are_unit_norm(model, attn):
    with create_engine(EngineConfig(engine="eager", model=model, attn=attn)) as e:
        p = e.predict(["a question about history", "river"])
        assert p.values.shape == (2, 64)
        assert np.allclose(np.linalg.norm(p.values, axis=1), 1.0, atol=1e-5)


def test_eager_bf16_on_cpu_agrees_with_fp32():
    texts = ["the product arrived broken", "excellent value for money"]
    with create_engine(EngineConfig(engine="eager", model="bge-base-tiny")) as a:
        ref = a.predict(texts).values
    with create_engine(EngineConfig(engine="eager", model="bge-base-tiny", precision="bf16")) as b:
        got = b.predict(texts).values
    cos = (ref * got).sum(axis=1)
    assert cos.min() > 0.99


def test_padding_does_not_change_an_input(eager_cls):
    alone = eager_cls.predict(["short"]).values[0]
    padded = eager_cls.predict(["short", "a much longer text " * 10]).values[0]
    assert np.allclose(alone, padded, atol=1e-4)


def test_fake_engine_is_deterministic_and_labelled():
    cfg = engine_config("fake", "gte-modernbert-tiny", fake_latency_ms=0)
    with create_engine(cfg) as a, create_engine(cfg) as b:
        x = a.predict(["same input", "other"]).values
        y = b.predict(["same input"]).values
        assert np.allclose(x[0], y[0])
        assert not np.allclose(x[0], x[1])
        assert a.info["weights"].startswith("none")
        assert not type(a).computes_model


def test_fake_latency_is_configurable():
    import time

    cfg = engine_config("fake", "bge-base-tiny", fake_latency_ms=30, fake_per_input_ms=0)
    with create_engine(cfg) as e:
        b = e.preprocess(["x"])
        t = time.perf_counter()
        e.infer(b.inputs)
        assert time.perf_counter() - t >= 0.03


def test_unknown_engine_and_bad_config_values():
    with pytest.raises(ConfigError, match="unknown engine 'tensorflow'"):
        engine_class("tensorflow")
    with pytest.raises(
        ConfigError, match="--precision must be one of fp32, fp16, bf16, int8; got 'int4'"
    ):
        EngineConfig(engine="eager", model="bge-base-tiny", precision="int4")
    with pytest.raises(ConfigError, match="unknown model"):
        EngineConfig(engine="eager", model="nope")


def test_optional_abilities_are_protocols_not_stubs():
    """Server statistics, padding hints and vision options: only engines that have them."""
    from engines.base import Engine, HintsPadding, ReportsServerStats, VisionOptions
    from engines.registry import ENGINES

    assert not hasattr(Engine, "server_stats") and not hasattr(Engine, "server_delta")
    assert {n for n in ENGINES if issubclass(engine_class(n), ReportsServerStats)} == {"triton"}
    for name in ENGINES:
        cls = engine_class(name)
        if "vision-embedding" in cls.tasks:
            assert issubclass(cls.Options, VisionOptions), name
    assert isinstance(engine_class("eager").Options(), HintsPadding)
    assert not isinstance(engine_class("onnx").Options(), HintsPadding)
    # the vision options keep their config_json names, recorded only when set
    assert "max_pixels" not in engine_config("eager", "bge-base-tiny").as_dict()
    assert engine_config("eager", "bge-base-tiny", max_pixels=200_704).as_dict()["max_pixels"]
    with pytest.raises(ConfigError, match="--max-image-pixels must be >= 1"):
        engine_config("onnx", "bge-base-tiny", max_image_pixels=0)


@pytest.mark.parametrize("bad", [[], "a string", [1, 2], None])
def test_bad_inputs_are_rejected_with_a_reason(eager_cls, bad):
    with pytest.raises(ConfigError):
        eager_cls.preprocess(bad)


def test_oversized_text_is_truncated_not_crashing(eager_cls):
    b = eager_cls.preprocess(["word " * 5000])
    assert b.inputs["input_ids"].shape[1] == eager_cls.pipeline.max_seq_len
    assert b.truncated == 1
    assert eager_cls.postprocess(eager_cls.infer(b.inputs), b).values.shape == (1, 3)


@pytest.mark.gpu
def test_eager_fp16_on_cuda():
    with create_engine(
        EngineConfig(engine="eager", model="bge-base-tiny", device="cuda", precision="fp16")
    ) as e:
        assert np.isfinite(e.predict(["hello"]).values).all()
