"""TensorRT FP16 path: pure helpers and fail-fast checks here; a real build on a GPU box."""

from __future__ import annotations

import shlex
import sys
import types

import numpy as np
import pytest
from helpers import write_export_manifest

from core.errors import ConfigError, EngineError, HardwareMismatch, MissingDependency
from engines.base import EngineConfig
from engines.tensorrt import TensorRTEngine
from exporters.base import ExportConfig
from exporters.tensorrt import (
    TensorRTExporter,
    plan_compatible,
    profile_shapes,
    trtexec_command,
)

MODEL = "distilbert-sentiment-tiny"
NAMES = ["input_ids", "attention_mask"]


def _cfg(tmp_path, **kw) -> ExportConfig:
    base = dict(model=MODEL, format="trt", out=str(tmp_path), precision="fp16")
    base.update(device="cuda", hw="l4")
    base.update(kw)
    return ExportConfig(**base)


@pytest.fixture
def no_tensorrt(monkeypatch):
    # None in sys.modules makes `import tensorrt` raise ImportError, installed or not
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture
def fake_tensorrt_no_gpu(monkeypatch):
    import torch

    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.3.0"
    fake.BuilderFlag = types.SimpleNamespace(FP16=0)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return fake


def test_profile_shapes_follow_batch_and_seq_ranges(tmp_path):
    cfg = _cfg(tmp_path, batch_range=(1, 8, 32), seq_range=(8, 128, 512))
    shapes = profile_shapes(cfg, NAMES)
    assert list(shapes) == NAMES
    for name in NAMES:
        assert shapes[name] == ((1, 8), (8, 128), (32, 512))


def test_trtexec_command_has_the_build_flags(tmp_path):
    cfg = _cfg(tmp_path, batch_range=(1, 4, 16), seq_range=(8, 64, 256))
    cmd = trtexec_command(
        "model.onnx", "model.plan", profile_shapes(cfg, NAMES), 4.0, "timing.cache"
    )
    args = shlex.split(cmd)
    assert args[0] == "trtexec"
    assert "--onnx=model.onnx" in args
    assert "--saveEngine=model.plan" in args
    assert "--fp16" in args
    assert "--minShapes=input_ids:1x8,attention_mask:1x8" in args
    assert "--optShapes=input_ids:4x64,attention_mask:4x64" in args
    assert "--maxShapes=input_ids:16x256,attention_mask:16x256" in args
    assert "--memPoolSize=workspace:4096M" in args
    assert "--timingCacheFile=timing.cache" in args
    assert not any(a.startswith("--workspace=") for a in args)  # TensorRT 8 flag


def test_trtexec_command_quotes_paths_with_spaces():
    shapes = {"input_ids": ((1, 8), (2, 16), (4, 32))}
    args = shlex.split(trtexec_command("/a b/m.onnx", "/a b/m.plan", shapes, 0.5, "/a b/t.cache"))
    assert "--onnx=/a b/m.onnx" in args
    assert "--memPoolSize=workspace:512M" in args


def test_plan_compatible_reasons():
    built = {"gpu": "NVIDIA L4", "compute_capability": "8.9", "tensorrt": "10.3.0"}
    assert plan_compatible(built, dict(built)) is None
    other_gpu = plan_compatible(built, {**built, "gpu": "NVIDIA A10G"})
    assert "NVIDIA L4" in other_gpu and "NVIDIA A10G" in other_gpu
    assert "--format trt" in other_gpu  # says how to rebuild
    other_trt = plan_compatible(built, {**built, "tensorrt": "10.5.0"})
    assert "10.3.0" in other_trt and "10.5.0" in other_trt
    assert "does not record" in plan_compatible({}, built)


def test_check_names_the_gpu_extra_when_tensorrt_is_missing(tmp_path, no_tensorrt):
    with pytest.raises(MissingDependency) as e:
        TensorRTExporter().check(_cfg(tmp_path))
    assert 'pip install -e ".[gpu]"' in str(e.value)


def test_check_refuses_without_a_gpu(tmp_path, fake_tensorrt_no_gpu):
    with pytest.raises(HardwareMismatch, match="NVIDIA GPU.*trtexec"):
        TensorRTExporter().check(_cfg(tmp_path))


def test_expected_hardware_without_a_gpu_is_a_one_line_error(tmp_path, fake_tensorrt_no_gpu):
    # the artifact cache asks for this before check(); it must not be a CUDA traceback
    with pytest.raises(HardwareMismatch):
        TensorRTExporter().expected_hardware(_cfg(tmp_path))


def test_check_refuses_tensorrt_without_fp16_builder_flag(tmp_path, fake_tensorrt_no_gpu):
    fake_tensorrt_no_gpu.__version__ = "11.0.0"
    fake_tensorrt_no_gpu.BuilderFlag = types.SimpleNamespace()
    with pytest.raises(EngineError, match="tensorrt>=10,<11"):
        TensorRTExporter().check(_cfg(tmp_path))


def test_check_rejects_fp32_before_touching_tensorrt(tmp_path, no_tensorrt):
    with pytest.raises(ConfigError, match="fp16"):
        TensorRTExporter().check(_cfg(tmp_path, precision="fp32"))


def test_check_rejects_seq_range_beyond_the_model(tmp_path):
    with pytest.raises(ConfigError, match="max sequence length"):
        TensorRTExporter().check(_cfg(tmp_path, seq_range=(8, 128, 4096)))


def test_engine_load_without_tensorrt_names_the_extra(no_tensorrt):
    cfg = EngineConfig(engine="trt", model=MODEL, precision="fp16", device="cuda")
    with pytest.raises(MissingDependency, match=r"pip install -e \"\.\[gpu\]\""):
        TensorRTEngine(cfg).load()


def test_engine_load_without_gpu_names_the_hardware(fake_tensorrt_no_gpu, tmp_path):
    cfg = EngineConfig(
        engine="trt", model=MODEL, precision="fp16", device="cuda", artifact=str(tmp_path)
    )
    with pytest.raises(HardwareMismatch, match="NVIDIA GPU"):
        TensorRTEngine(cfg).load()


class StandInPlanExporter(TensorRTExporter):
    """Records a plan's profile in the manifest as TensorRTExporter does, without TensorRT."""

    def __init__(self):
        self.builds: list[tuple[tuple[int, int, int], tuple[int, int, int]]] = []

    def export(self, cfg, model, tokenizer, out_dir):
        from exporters.base import ExportInfo

        self.builds.append((cfg.batch_range, cfg.seq_range))
        (out_dir / "model.plan").write_bytes(b"stand-in plan")
        shapes = profile_shapes(cfg, NAMES)
        return ExportInfo(
            input_names=list(NAMES),
            output_names=["logits"],
            shape_profiles={
                n: {"min": list(lo), "opt": list(opt), "max": list(hi)}
                for n, (lo, opt, hi) in shapes.items()
            },
            hardware=self.expected_hardware(cfg),
            tool_versions={"tensorrt": "10.3.0"},
        )


def test_cached_plan_is_rebuilt_when_a_run_needs_a_bigger_profile(tmp_path, monkeypatch):
    from dataclasses import replace

    from exporters.api import ensure_artifact

    # no TensorRT and no GPU here: every TensorRT exporter sees the same stand-in GPU
    built_on = {"gpu": "stand-in", "compute_capability": "8.9", "tensorrt": "10.3.0"}
    monkeypatch.setattr(TensorRTExporter, "check", lambda self, cfg: None)
    monkeypatch.setattr(TensorRTExporter, "expected_hardware", lambda self, cfg: built_on)
    exporter = StandInPlanExporter()
    cfg = _cfg(
        tmp_path / "plan",
        batch_range=(1, 8, 32),
        seq_range=(8, 128, 256),
        weights="random",
        skip_parity=True,
    )
    _, reused = ensure_artifact(cfg, exporter)
    assert not reused
    # inside the profile: reused (a sequence under its minimum is padded up by the engine)
    _, reused = ensure_artifact(
        replace(cfg, batch_range=(1, 4, 8), seq_range=(4, 16, 64)), exporter
    )
    assert reused and len(exporter.builds) == 1

    # --inputs-per-request 64 after a plan built for batches up to 32: widened, not reused
    m, reused = ensure_artifact(replace(cfg, batch_range=(64, 64, 64)), exporter)
    assert not reused
    assert exporter.builds[-1] == ((1, 64, 64), (8, 128, 256))
    assert m.shape_profiles["input_ids"] == {"min": [1, 8], "opt": [64, 128], "max": [64, 256]}
    # longer sequences than the plan holds: widened again, keeping batches 1..64
    m, reused = ensure_artifact(replace(cfg, seq_range=(8, 128, 512)), exporter)
    assert not reused
    assert m.shape_profiles["attention_mask"]["max"] == [64, 512]
    _, reused = ensure_artifact(replace(cfg, batch_range=(1, 32, 64)), exporter)
    assert reused and len(exporter.builds) == 3


def test_engines_do_not_import_exporters():
    import ast
    from pathlib import Path

    import engines.tensorrt as mod

    tree = ast.parse(Path(mod.__file__).read_text())
    imported = [
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in (n.names if isinstance(n, ast.Import) else [n])
    ]
    assert not [m for m in imported if m and m.split(".")[0] in ("exporters", "harness")]


@pytest.mark.trt
def test_tiny_export_builds_a_plan_that_matches_eager(tmp_path):
    from engines.models import get_spec, load_model, load_tokenizer

    cfg = _cfg(tmp_path, batch_range=(1, 2, 4), seq_range=(8, 32, 64), workspace_gb=1.0)
    exporter = TensorRTExporter()
    exporter.check(cfg)
    spec = get_spec(MODEL)
    loaded = load_model(spec, weights="random", attn=exporter.export_attn)
    tok = load_tokenizer(spec)
    info = exporter.export(cfg, loaded.model.eval(), tok.tokenizer, tmp_path)
    assert (tmp_path / "model.plan").stat().st_size > 0
    assert (tmp_path / "model.onnx").is_file()
    assert (tmp_path / "timing.cache").is_file()
    assert info.shape_profiles["input_ids"] == {"min": [1, 8], "opt": [2, 32], "max": [4, 64]}
    assert info.details["trtexec"].startswith("trtexec --onnx=model.onnx")
    write_export_manifest(
        tmp_path, spec, info, loaded, tok, model=MODEL, format="trt", precision="fp16"
    )

    texts = ["great product", "terrible service, never again", "ok"]
    ecfg = EngineConfig(
        engine="trt", model=MODEL, precision="fp16", device="cuda", artifact=str(tmp_path)
    )
    with TensorRTEngine(ecfg) as trt_engine:
        got = trt_engine.predict(texts)  # 'ok' is shorter than the profile minimum: padded
        assert trt_engine.info["weights"] == "random"
    eager = EngineConfig(engine="eager", model=MODEL, attn="eager")
    from engines.torch_eager import EagerEngine

    with EagerEngine(eager) as ref_engine:
        ref = ref_engine.predict(texts)
    assert got.values.shape == ref.values.shape == (3, 3)
    assert np.abs(got.values - ref.values).max() < 1e-2
    assert got.labels == ref.labels
