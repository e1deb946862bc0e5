"""int8: the recipe keeps a trained model within the parity gate; the floor uses an int8 peak."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from exporters.api import export
from exporters.base import ExportConfig
from exporters.parity import THRESHOLDS
from harness import hardware

pytestmark = pytest.mark.onnx


def test_int8_exclusions_keep_softmax_inputs_and_the_last_layer(tmp_path):
    import onnx

    from engines.models import get_spec, load_model
    from exporters.onnx import export_onnx_file, int8_exclusions

    spec = get_spec("bge-base-tiny")
    model = load_model(spec, weights="random", attn="eager").model.eval()
    export_onnx_file(model, spec, tmp_path / "raw.onnx")
    graph = onnx.load(str(tmp_path / "raw.onnx"))
    kept = int8_exclusions(graph, layers=2)
    matmuls = {n.name for n in graph.graph.node if n.op_type == "MatMul"}
    assert set(kept) <= matmuls
    # two activation x activation products per layer, and all six projections of layer 1
    assert sum("layer.0/" in k for k in kept) == 2
    assert sum("layer.1/" in k for k in kept) == 8


def test_int8_artifact_records_its_recipe(tmp_path):
    m = export(
        ExportConfig(
            model="bge-base-tiny", format="onnx", precision="int8", out=str(tmp_path / "a")
        )
    )
    recipe = m.details["quantization"]
    assert recipe["weights"] == "QInt8, symmetric, per channel" and recipe["fp32_nodes"] > 0
    assert recipe["reduce_range"] is (not hardware_has_vnni())
    assert m.parity["passed"], m.parity["failures"]


def test_static_int8_is_calibrated_qdq_with_the_ffn_down_projections_fp32(tmp_path):
    import onnx

    from exporters.onnx import ffn_down_matmuls

    out = tmp_path / "a"
    m = export(ExportConfig("bge-base-tiny", "onnx", str(out), precision="int8", variant="static"))
    recipe = m.details["quantization"]
    assert recipe["method"].startswith("static") and recipe["calibration"]["texts"] > 0
    assert m.details["fusions"].get("Attention")  # the optimizer's fusions come first
    assert m.parity["passed"], m.parity["failures"]
    model = onnx.load(str(out / "model.onnx"))
    graph = model.graph
    assert sorted(m.files) == ["model.onnx"]  # no calibration leftovers in the artifact
    kept = ffn_down_matmuls(model)
    assert len(kept) == recipe["fp32_nodes"] == 2  # one per layer
    fed_by_dq = {
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and any(i.endswith("_DequantizeLinear_Output") for i in n.input)
    }
    assert fed_by_dq and not fed_by_dq & set(kept)


def test_static_variant_needs_int8(tmp_path):
    with pytest.raises(ConfigError, match="--variant static is the calibrated int8 recipe"):
        export(ExportConfig("bge-base-tiny", "onnx", str(tmp_path / "a"), variant="static"))


def hardware_has_vnni() -> bool:
    from exporters.onnx import has_vnni

    return has_vnni()


@pytest.mark.trained
@pytest.mark.parametrize("variant", ["", "optimized", "static"])
def test_int8_passes_parity_on_trained_minilm(tmp_path, minilm_dir, variant):
    m = export(
        ExportConfig(
            model="all-minilm-l6",
            format="onnx",
            precision="int8",
            variant=variant,
            model_path=str(minilm_dir),
            out=str(tmp_path / "a"),
        )
    )
    assert m.weights == "local"
    assert m.parity["passed"], m.parity["failures"]
    worst = min(s["min_cosine"] for s in m.parity["shapes"])
    assert worst >= THRESHOLDS["int8"].min_cosine


def test_int8_peak_keeps_the_best_round(monkeypatch):
    rates = iter([3e9, 9e9, 5e9, 1e9, 2e9, 4e9])
    monkeypatch.setattr(hardware, "_best_rate", lambda step, ops, seconds, warm: next(rates))
    monkeypatch.setattr(hardware, "_int8_matmuls", lambda n: [None, None])
    hardware.measured_cpu_peak.cache_clear()
    try:
        assert hardware.measured_cpu_peak("int8", 0.01, rounds=3) == 9e9
    finally:
        hardware.measured_cpu_peak.cache_clear()


def test_a_kernel_far_below_the_best_is_timed_once_and_each_is_warmed_once(monkeypatch):
    calls = []

    def rate(step, ops, seconds, warm):
        calls.append((step, warm))
        return {"slow": 1e9, "fast": 8e9}[step]

    monkeypatch.setattr(hardware, "_best_rate", rate)
    monkeypatch.setattr(hardware, "_int8_matmuls", lambda n: ["slow", "fast"])
    hardware.measured_cpu_peak.cache_clear()
    try:
        assert hardware.measured_cpu_peak("int8", 0.01, rounds=3) == 8e9
    finally:
        hardware.measured_cpu_peak.cache_clear()
    assert calls == [("slow", True), ("fast", True), ("fast", False), ("fast", False)]


def test_int8_peak_runs_a_real_int8_kernel():
    assert hardware._int8_matmuls(64), "no int8 matmul kernel found"
    hardware.measured_cpu_peak.cache_clear()
    try:
        assert hardware.measured_cpu_peak("int8", 0.2) > 1e9
    finally:
        hardware.measured_cpu_peak.cache_clear()


@pytest.mark.parametrize(
    "name, separator, matched",
    [
        ("/encoder/layer.3/output/dense/MatMul", "/", True),
        ("/encoder/layer.3/attention/output/dense/MatMul", "/", False),
        ("/encoder/layer.3/intermediate/dense/MatMul", "/", False),
        ("__module.encoder.layer.0.output.dense/aten::linear/MatMul", ".", True),
        ("__module.encoder.layer.0.attention.output.dense/aten::linear/MatMul", ".", False),
        ("/distilbert/transformer/layer.1/ffn/lin2/MatMul", "/", True),
        ("/distilbert/transformer/layer.1/ffn/lin1/MatMul", "/", False),
        ("__module.model.layers.2.mlp.Wo/aten::linear/MatMul", ".", True),
        ("__module.model.layers.2.mlp.Wi/aten::linear/MatMul", ".", False),
    ],
)
def test_ffn_down_projections_are_found_in_each_encoder_family(name, separator, matched):
    from exporters.calibration import ffn_down_pattern

    assert bool(ffn_down_pattern(separator).search(name)) is matched
