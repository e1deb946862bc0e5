"""OpenVINO engine and exporter: IR export + load + parity on tiny models, int8 through NNCF
(static and weight-only), the options, one-line errors, and int8 parity on trained weights."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pandas as pd
import pytest

from core.errors import ConfigError, MissingDependency
from engines.registry import create_engine, engine_config
from exporters.api import export
from exporters.base import ExportConfig
from exporters.parity import THRESHOLDS
from harness.run import main as run_main

pytestmark = pytest.mark.openvino

MODELS = {"bge-base-tiny": "embedding", "distilbert-sentiment-tiny": "classification"}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ov")
    made = {}
    for model in MODELS:
        out = root / model / "fp32"
        made[model, "fp32", ""] = (export(ExportConfig(model, "openvino", str(out))), out)
    for variant in ("", "weights"):
        out = root / f"int8-{variant or 'static'}"
        cfg = ExportConfig("bge-base-tiny", "openvino", str(out), "int8", variant, skip_parity=True)
        made["bge-base-tiny", "int8", variant] = (export(cfg), out)
    return made


def _engine(model, out, precision="fp32", variant="", **kw):
    return create_engine(
        engine_config(
            "openvino", model, precision=precision, variant=variant, artifact=str(out), **kw
        )
    )


@pytest.mark.parametrize("model", MODELS)
def test_fp32_export_passes_parity_at_three_shapes(artifacts, model):
    m, out = artifacts[model, "fp32", ""]
    assert m.parity["passed"] is True, m.parity["failures"]
    assert [(s["batch"], s["tokens"]) for s in m.parity["shapes"]] == [(1, 16), (4, 64), (2, 200)]
    assert {"model.xml", "model.bin"} <= set(m.files)
    assert m.format == "openvino" and m.tool_versions["openvino"]
    assert m.output_names == ["last_hidden_state" if MODELS[model] == "embedding" else "logits"]


def test_fp32_ir_keeps_fp32_weights(artifacts):
    # ov.save_model compresses to fp16 unless told not to; an fp32 artifact must not be
    import openvino as ov

    _, out = artifacts["bge-base-tiny", "fp32", ""]
    model = ov.Core().read_model(str(out / "model.xml"))
    consts = [op for op in model.get_ops() if op.get_type_name() == "Constant"]
    assert not [c for c in consts if c.get_element_type() == ov.Type.f16]


def test_engine_runs_fp32_execution_and_records_its_config(artifacts):
    _, out = artifacts["bge-base-tiny", "fp32", ""]
    with _engine("bge-base-tiny", out, threads=1) as eng:
        config = eng.info["openvino_config"]
        assert "INFERENCE_PRECISION_HINT=f32" in config  # never the CPU's default bf16
        assert "INFERENCE_NUM_THREADS=1" in config
        pred = eng.predict(["a short text", "a longer text with more words in it"])
    assert pred.values.shape == (2, 64)
    assert np.allclose(np.linalg.norm(pred.values, axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("variant", ["", "weights"])
def test_int8_recipes_are_int8_and_sane(artifacts, variant):
    import openvino as ov

    m, out = artifacts["bge-base-tiny", "int8", variant]
    recipe = m.details["quantization"]
    assert ("static" if variant == "" else "weight-only") in recipe["method"]
    if variant == "":
        assert recipe["calibration"]["texts"] > 0
    model = ov.Core().read_model(str(out / "model.xml"))
    kinds = {op.get_type_name() for op in model.get_ops()}
    types = {op.get_element_type() for op in model.get_ops() if op.get_type_name() == "Constant"}
    assert ov.Type.u8 in types  # int8 weights (weight-only ones, asymmetric) in both recipes
    assert ("FakeQuantize" in kinds) is (variant == "")  # calibrated activations: static only
    with _engine("bge-base-tiny", out, "int8", variant) as eng:
        values = eng.predict(["int8 sanity", "another text of a different length"]).values
    assert values.shape == (2, 64) and np.isfinite(values).all()


def test_requests_from_many_threads_match_one_thread(artifacts):
    _, out = artifacts["bge-base-tiny", "fp32", ""]
    texts = [[f"text number {i} " * (i + 1)] for i in range(8)]
    with _engine("bge-base-tiny", out) as eng:
        serial = [eng.predict(t).values for t in texts]
        got: dict[int, np.ndarray] = {}

        def work(i):
            got[i] = eng.predict(texts[i]).values

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, want in enumerate(serial):
        assert np.allclose(got[i], want, atol=1e-6)


def test_artifact_runs_through_harness(artifacts, tmp_path, capsys):
    _, out = artifacts["bge-base-tiny", "fp32", ""]
    argv = [
        *"--model bge-base-tiny --task embedding --engine openvino --artifact".split(),
        str(out),
        *"--ov-hint throughput --ov-streams 1 --inputs-per-request 2 --duration 0.2".split(),
        *"--min-calls 2 --num-samples 16 --output-dir".split(),
        str(tmp_path),
    ]
    assert run_main(argv) == 0, capsys.readouterr()
    row = pd.read_csv(tmp_path / "results.csv").iloc[0]
    assert row["engine"] == "openvino" and row["invalid_embeddings"] == 0
    assert '"ov_hint": "throughput"' in row["config_json"]


def test_missing_openvino_is_one_line_naming_the_extra(artifacts, monkeypatch):
    _, out = artifacts["bge-base-tiny", "fp32", ""]
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependency) as e:
        _engine("bge-base-tiny", out).load()
    assert 'pip install -e ".[openvino]"' in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(MissingDependency, match=r"\.\[openvino\]"):
        export(ExportConfig("bge-base-tiny", "openvino", str(out.parent / "none")))


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(ov_hint="fastest"), "--ov-hint must be one of latency, throughput"),
        (dict(ov_pinning="maybe"), "--ov-pinning must be one of auto, on, off"),
        (dict(ov_streams=-1), "--ov-streams must be >= 0"),
        (dict(precision="fp16"), "--engine openvino runs --precision fp32, bf16, int8"),
    ],
)
def test_options_are_checked_in_one_line(kw, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        engine_config("openvino", "bge-base-tiny", **kw)


def test_compile_config_follows_the_options_and_precision():
    from engines.openvino import OpenVinoOptions, compile_config

    plain = compile_config(OpenVinoOptions(), "int8", None)
    assert plain == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    tuned = compile_config(OpenVinoOptions("throughput", 2, "off"), "bf16", 2)
    assert tuned == {
        "PERFORMANCE_HINT": "THROUGHPUT",
        "INFERENCE_PRECISION_HINT": "bf16",
        "NUM_STREAMS": 2,
        "INFERENCE_NUM_THREADS": 2,
        "ENABLE_CPU_PINNING": False,
    }


def test_exporter_refuses_a_recipe_without_int8(tmp_path):
    with pytest.raises(ConfigError, match="--variant weights is an int8 recipe"):
        export(ExportConfig("bge-base-tiny", "openvino", str(tmp_path / "a"), variant="weights"))


@pytest.mark.trained
@pytest.mark.parametrize("variant", ["", "weights"])
def test_int8_passes_parity_on_trained_minilm(tmp_path, minilm_dir, variant):
    m = export(
        ExportConfig(
            model="all-minilm-l6",
            format="openvino",
            out=str(tmp_path / "a"),
            precision="int8",
            variant=variant,
            model_path=str(minilm_dir),
        )
    )
    assert m.weights == "local"
    assert m.parity["passed"], m.parity["failures"]
    worst = min(s["min_cosine"] for s in m.parity["shapes"])
    assert worst >= THRESHOLDS["int8"].min_cosine
