import sys
import types

import numpy as np
import pytest
from helpers import write_export_manifest

from core.errors import ConfigError, EngineError, HardwareMismatch, MissingDependency
from engines import neuron as neuron_mod
from engines.base import EngineConfig
from engines.models import get_spec, load_model, load_tokenizer
from engines.neuron import (
    NeuronEngine,
    bucket_file,
    count_cores,
    pad_to_bucket,
    pick_bucket,
    plan_call,
)
from exporters.base import ExportConfig
from exporters.neuron import NeuronExporter, compiler_args, default_buckets

BUCKETS = [(1, 128), (8, 128), (8, 512), (32, 128), (32, 512)]


def _export_cfg(tmp_path, **kw):
    base = dict(
        model="bge-base-tiny",
        format="neuron",
        out=str(tmp_path),
        precision="bf16",
        device="neuron",
        hw="inf2",
    )
    return ExportConfig(**{**base, **kw})


def _engine_cfg(artifact=None, **kw):
    base = dict(engine="neuron", model="bge-base-tiny", precision="bf16", device="neuron")
    return EngineConfig(artifact=artifact, **{**base, **kw})


@pytest.fixture
def no_neuronx(monkeypatch):
    # None in sys.modules makes `import torch_neuronx` raise ImportError, installed or not
    monkeypatch.setitem(sys.modules, "torch_neuronx", None)


def _fake_neuronx(data_parallel=None):
    """A stand-in torch_neuronx: CPU torch.jit.trace for compilation, as on a laptop."""
    import torch

    mod = types.ModuleType("torch_neuronx")
    mod.__version__ = "0.0-fake"
    mod.calls = []

    def trace(func, example_inputs, compiler_args=None):
        mod.calls.append(compiler_args)
        return torch.jit.trace(func, example_inputs, check_trace=False)

    mod.trace = trace
    if data_parallel is not None:
        mod.DataParallel = data_parallel
    return mod


@pytest.fixture
def fake_neuron(monkeypatch):
    mod = _fake_neuronx()
    monkeypatch.setitem(sys.modules, "torch_neuronx", mod)
    monkeypatch.setattr(neuron_mod, "has_neuron_device", lambda: True)
    monkeypatch.setattr(neuron_mod, "visible_neuron_cores", lambda: None)
    return mod


# ------------------------------------------------------------------------------ pure helpers


def test_pick_bucket_takes_smallest_area_that_fits():
    assert pick_bucket(BUCKETS, 1, 10) == (1, 128)
    assert pick_bucket(BUCKETS, 2, 128) == (8, 128)
    assert pick_bucket(BUCKETS, 8, 129) == (8, 512)
    assert pick_bucket(BUCKETS, 9, 100) == (32, 128)
    assert pick_bucket(BUCKETS, 32, 512) == (32, 512)
    # equal area: the shorter sequence wins
    assert pick_bucket([(4, 64), (2, 128)], 2, 10) == (4, 64)


def test_pick_bucket_names_largest_when_nothing_fits():
    with pytest.raises(EngineError, match="batch 32 x seq 512"):
        pick_bucket(BUCKETS, 33, 16)
    with pytest.raises(EngineError, match="max seq 512"):
        pick_bucket(BUCKETS, 1, 513)
    with pytest.raises(EngineError, match="no buckets"):
        pick_bucket([], 1, 1)


def test_plan_call_splits_only_when_it_pads_less():
    buckets = [(1, 128), (8, 128), (32, 128)]
    assert plan_call(buckets, 8, 100, cores=1) == ((8, 128), 1)
    assert plan_call(buckets, 1, 100, cores=2) == ((1, 128), 1)
    assert plan_call(buckets, 2, 100, cores=2) == ((1, 128), 2)  # 2 rows, not 8
    assert plan_call(buckets, 8, 100, cores=2) == ((8, 128), 1)  # 16 padded rows > 8
    assert plan_call(buckets, 16, 100, cores=2) == ((8, 128), 2)  # 16 rows, not 32
    assert plan_call(buckets, 64, 100, cores=2) == ((32, 128), 2)  # fits only split
    with pytest.raises(EngineError):
        plan_call(buckets, 65, 100, cores=2)


def test_pad_to_bucket_pads_rows_and_columns_with_zeros():
    ids = np.array([[101, 7, 102], [101, 102, 0]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    out = pad_to_bucket({"input_ids": ids, "attention_mask": mask}, (4, 8))
    assert out["input_ids"].shape == (4, 8) and out["attention_mask"].shape == (4, 8)
    assert out["input_ids"].dtype == np.int64
    assert np.array_equal(out["input_ids"][:2, :3], ids)
    assert np.array_equal(out["attention_mask"][:2, :3], mask)
    assert out["input_ids"][2:].sum() == 0 and out["input_ids"][:, 3:].sum() == 0
    assert out["attention_mask"].sum() == mask.sum()
    same = pad_to_bucket({"input_ids": ids}, (2, 3))
    assert same["input_ids"] is ids
    with pytest.raises(EngineError):
        pad_to_bucket({"input_ids": ids}, (1, 8))


def test_bucket_file_and_core_count():
    assert bucket_file(8, 128) == "model_b8_s128.pt"
    assert count_cores("0-3") == 4
    assert count_cores("1") == 1
    assert count_cores("0,2-3") == 3


def test_default_buckets(tmp_path):
    cfg = _export_cfg(tmp_path)
    assert default_buckets(cfg) == [(b, s) for b in (1, 8, 32) for s in (128, 256, 512)]
    short = _export_cfg(tmp_path, batch_range=(1, 1, 4), seq_range=(8, 64, 200))
    assert default_buckets(short) == [(1, 128), (1, 200), (4, 128), (4, 200)]
    tiny = _export_cfg(tmp_path, batch_range=(2, 2, 2), seq_range=(8, 16, 64))
    assert default_buckets(tiny) == [(2, 64)]
    given = _export_cfg(tmp_path, buckets=((4, 64), (1, 16), (4, 64)))
    assert default_buckets(given) == [(1, 16), (4, 64)]


def test_compiler_args():
    assert compiler_args("bf16") == ["--auto-cast", "matmult", "--auto-cast-type", "bf16"]
    assert compiler_args("fp32") == ["--auto-cast", "none"]
    with pytest.raises(ConfigError):
        compiler_args("fp16")


# ------------------------------------------------------------------ checks fail fast, clearly


def test_check_without_torch_neuronx_names_the_extra(tmp_path, no_neuronx):
    with pytest.raises(MissingDependency) as e:
        NeuronExporter().check(_export_cfg(tmp_path))
    assert 'pip install -e ".[neuron]"' in str(e.value)
    assert "pip.repos.neuron.amazonaws.com" in str(e.value)


def test_check_without_device_is_a_hardware_mismatch(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_neuronx", types.ModuleType("torch_neuronx"))
    monkeypatch.setattr(neuron_mod, "has_neuron_device", lambda: False)
    with pytest.raises(HardwareMismatch, match="/dev/neuron0"):
        NeuronExporter().check(_export_cfg(tmp_path))


def test_check_rejects_fp16_and_bad_buckets(tmp_path, no_neuronx):
    with pytest.raises(ConfigError, match="fp32, bf16"):
        NeuronExporter().check(_export_cfg(tmp_path, precision="fp16"))
    with pytest.raises(ConfigError, match="1024"):
        NeuronExporter().check(_export_cfg(tmp_path, buckets=((1, 1024),)))


def test_engine_load_without_torch_neuronx_is_missing_dependency(tmp_path, no_neuronx):
    engine = NeuronEngine(_engine_cfg(str(tmp_path)))
    with pytest.raises(MissingDependency, match=r"\.\[neuron\]"):
        engine.load()


def test_engine_load_without_device_or_artifact(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch_neuronx", types.ModuleType("torch_neuronx"))
    monkeypatch.setattr(neuron_mod, "has_neuron_device", lambda: False)
    with pytest.raises(HardwareMismatch, match="inf2"):
        NeuronEngine(_engine_cfg(str(tmp_path))).load()
    monkeypatch.setattr(neuron_mod, "has_neuron_device", lambda: True)
    with pytest.raises(EngineError, match="--format neuron"):
        NeuronEngine(_engine_cfg(None)).load()


# ------------------------------------------- the whole path on CPU, torch.jit.trace standing in


def _export(tmp_path, model_name, buckets, precision="bf16"):
    cfg = _export_cfg(tmp_path, model=model_name, buckets=buckets, precision=precision)
    exporter = NeuronExporter()
    exporter.check(cfg)
    spec = get_spec(model_name)
    loaded = load_model(spec, weights="random", attn=exporter.export_attn)
    tok = load_tokenizer(spec)
    info = exporter.export(cfg, loaded.model, tok.tokenizer, tmp_path)
    write_export_manifest(
        tmp_path, spec, info, loaded, tok, model=model_name, format="neuron", precision=precision
    )
    return info


def _eager(model_name, texts):
    from engines.registry import create_engine

    with create_engine(EngineConfig(engine="eager", model=model_name, attn="eager")) as e:
        return e.predict(texts).values


TEXTS = ["great product", "the package arrived broken and support never answered", "ok"]


@pytest.mark.parametrize("model_name", ["bge-base-tiny", "distilbert-sentiment-tiny"])
def test_export_and_run_with_traced_stand_in(tmp_path, fake_neuron, model_name):
    info = _export(tmp_path, model_name, ((1, 16), (4, 32)))
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["model_b1_s16.pt", "model_b4_s32.pt"]
    assert fake_neuron.calls == [compiler_args("bf16")] * 2
    assert info.shape_profiles == {"buckets": [[1, 16], [4, 32]]}
    assert info.details["data_parallel"] is True
    assert info.output_names == (
        ["logits"] if "distilbert" in model_name else ["last_hidden_state"]
    )

    with NeuronEngine(_engine_cfg(str(tmp_path), model=model_name)) as engine:
        assert engine.pipeline.max_seq_len == 32  # capped to the largest bucket
        assert engine.info["weights"] == "random" and engine.info["data_parallel"] is False
        one = engine.predict(TEXTS[:1]).values  # bucket 1x16
        got = engine.predict(TEXTS).values  # bucket 4x32, one padded row
        raw = engine.infer(engine.preprocess(TEXTS).inputs)
    assert raw.shape[0] == 3
    ref = _eager(model_name, TEXTS)
    assert got.shape == ref.shape
    assert np.allclose(got, ref, atol=1e-4)
    assert np.allclose(one[0], ref[0], atol=1e-4)


def test_data_parallel_feeds_each_core_its_compiled_batch(tmp_path, monkeypatch, fake_neuron):
    seen = []

    class FakeDataParallel:
        """Checks the documented no-dynamic-batching contract: rows / cores == compiled batch."""

        def __init__(self, module, device_ids=None, dim=0, set_dynamic_batching=True):
            assert set_dynamic_batching is False and dim == 0
            self.module, self.n = module, len(device_ids)

        def __call__(self, ids, mask):
            import torch

            seen.append(ids.shape)
            chunks = zip(ids.chunk(self.n), mask.chunk(self.n), strict=True)
            return torch.cat([self.module(i, m) for i, m in chunks])

    _export(tmp_path, "bge-base-tiny", ((1, 16), (2, 32)))
    fake_neuron.DataParallel = FakeDataParallel
    monkeypatch.setattr(neuron_mod, "visible_neuron_cores", lambda: 2)
    texts = TEXTS + ["fourth input"]
    with NeuronEngine(_engine_cfg(str(tmp_path))) as engine:
        assert engine.info["data_parallel"] is True and engine.info["neuron_cores"] == 2
        got = engine.predict(texts).values
    assert seen == [(4, 32)]  # two cores x compiled batch 2
    assert np.allclose(got, _eager("bge-base-tiny", texts), atol=1e-4)


def test_engine_refuses_mismatched_artifact_and_long_max_seq(tmp_path, fake_neuron):
    from engines.artifact import ArtifactError

    _export(tmp_path, "bge-base-tiny", ((1, 16),))
    with pytest.raises(ArtifactError, match="precision"):
        NeuronEngine(_engine_cfg(str(tmp_path), precision="fp32")).load()
    with pytest.raises(EngineError, match="--max-seq-len 64"):
        NeuronEngine(_engine_cfg(str(tmp_path), max_seq_len=64)).load()
    with NeuronEngine(_engine_cfg(str(tmp_path))) as engine:
        with pytest.raises(EngineError, match="largest bucket"):
            engine.predict(TEXTS[:2])


def test_cached_buckets_are_widened_when_a_run_needs_more(tmp_path, fake_neuron):
    from dataclasses import replace

    from exporters.api import ensure_artifact

    cfg = _export_cfg(
        tmp_path / "art", buckets=((1, 16), (4, 32)), weights="random", skip_parity=True
    )
    m, reused = ensure_artifact(cfg)
    assert not reused and len(fake_neuron.calls) == 2
    _, reused = ensure_artifact(replace(cfg, buckets=((4, 32),)))
    assert reused and len(fake_neuron.calls) == 2

    # a batch of 8 has no bucket: re-exported with the old buckets and the new one
    m, reused = ensure_artifact(replace(cfg, buckets=((8, 32),)))
    assert not reused
    assert m.shape_profiles["buckets"] == [[1, 16], [4, 32], [8, 32]]
    # the default buckets follow the run's batch range: --inputs-per-request 1,16 needs batch 16
    m, reused = ensure_artifact(
        replace(cfg, buckets=(), batch_range=(1, 16, 16), seq_range=(8, 32, 32))
    )
    assert not reused
    assert m.shape_profiles["buckets"] == [[1, 16], [1, 32], [4, 32], [8, 32], [16, 32]]


# --------------------------------------------------------------- real hardware (inf2 only)


@pytest.mark.neuron
def test_tiny_export_runs_on_inferentia(tmp_path):
    info = _export(tmp_path, "bge-base-tiny", ((1, 16), (4, 32)))
    assert "torch-neuronx" in info.tool_versions
    with NeuronEngine(_engine_cfg(str(tmp_path))) as engine:
        got = engine.predict(TEXTS).values
    ref = _eager("bge-base-tiny", TEXTS)
    assert (got * ref).sum(axis=1).min() > 0.99  # bf16 matmuls: cosine, not exact equality
