"""Tiny DistilBERT and ModernBERT through the CPU exports: onnx (fp32, optimized, int8) for
both, aoti for DistilBERT and compile for ModernBERT (inductor once a model). Each passes parity
at 3 shapes and runs through `python -m harness.run`."""

import json
import os

import pandas as pd
import pytest

from core.errors import ConfigError, MissingDependency
from engines.artifact import read_manifest, write_manifest
from exporters.api import ensure_artifact, export
from exporters.base import ExportConfig, exporter_class
from harness.export import main as export_main
from harness.run import main as run_main

pytestmark = pytest.mark.onnx

MODELS = {"distilbert-sentiment-tiny": "classification", "gte-modernbert-tiny": "embedding"}
CASES = [
    ("onnx", "fp32", ""),
    ("onnx", "fp32", "optimized"),
    ("onnx", "int8", "optimized"),
    ("aoti", "fp32", ""),
]
# inductor's C++ code generation takes 25-50 s a model here: each model goes through it once,
# DistilBERT as an AOTInductor package, ModernBERT under torch.compile (same code generator)
AOTI_MODELS = ("distilbert-sentiment-tiny",)
COMPILED_MODELS = ("gte-modernbert-tiny",)
EXPORTS = [
    (model, *case)
    for model in MODELS
    for case in CASES
    if case[0] != "aoti" or model in AOTI_MODELS
]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    made = {}
    for model, fmt, prec, variant in EXPORTS:
        out = root / model / f"{fmt}-{prec}-{variant or 'plain'}"
        cfg = ExportConfig(model=model, format=fmt, precision=prec, variant=variant, out=str(out))
        made[model, fmt, prec, variant] = (export(cfg), out)
    return made


@pytest.mark.parametrize("model,fmt,prec,variant", EXPORTS)
def test_export_passes_parity_at_three_shapes(artifacts, model, fmt, prec, variant):
    m, out = artifacts[model, fmt, prec, variant]
    assert m.parity["passed"] is True, m.parity["failures"]
    assert [(s["batch"], s["tokens"]) for s in m.parity["shapes"]] == [(1, 16), (4, 64), (2, 200)]
    assert m.weights == "random" and m.export_seconds > 0
    assert m.files and all(len(h) == 64 for h in m.files.values())
    assert read_manifest(out).parity == m.parity  # the manifest on disk carries the verdict


def test_optimizer_reports_fusions_and_says_what_it_missed(artifacts):
    distil = artifacts["distilbert-sentiment-tiny", "onnx", "fp32", "optimized"][0]
    fusions = distil.details["fusions"]
    assert fusions.get("Attention", 0) >= 2 and fusions.get("SkipLayerNormalization", 0) >= 2
    modern = artifacts["gte-modernbert-tiny", "onnx", "fp32", "optimized"][0]
    # ORT's BERT fusion does not match ModernBERT's rotary attention: that must be said
    assert "Attention" in modern.details.get("fusion_warning", "")


@pytest.mark.parametrize("fmt,prec,variant", [("onnx", "fp32", ""), ("aoti", "fp32", "")])
def test_dynamic_artifacts_are_reused_for_any_batch_and_sequence(artifacts, fmt, prec, variant):
    model = "distilbert-sentiment-tiny"
    m, out = artifacts[model, fmt, prec, variant]
    cfg = ExportConfig(
        model=model,
        format=fmt,
        precision=prec,
        variant=variant,
        out=str(out),
        batch_range=(64, 128, 256),
        seq_range=(2, 128, 512),
    )
    again, reused = ensure_artifact(cfg)
    assert reused and again.export_seconds == m.export_seconds


def test_int8_is_smaller_than_fp32(artifacts):
    fp32 = artifacts["distilbert-sentiment-tiny", "onnx", "fp32", "optimized"][1]
    int8 = artifacts["distilbert-sentiment-tiny", "onnx", "int8", "optimized"][1]
    assert (int8 / "model.onnx").stat().st_size < (fp32 / "model.onnx").stat().st_size


@pytest.mark.parametrize("model,fmt,prec,variant", EXPORTS)
def test_artifact_runs_through_harness(artifacts, tmp_path, capsys, model, fmt, prec, variant):
    task = MODELS[model]
    out = artifacts[model, fmt, prec, variant][1]
    argv = [
        "--model",
        model,
        "--task",
        task,
        "--engine",
        fmt,
        "--precision",
        prec,
        "--artifact",
        str(out),
        *"--inputs-per-request 2 --duration 0.2 --min-calls 2 --num-samples 16 --output-dir".split(),
        str(tmp_path),
    ]
    if variant:
        argv += ["--variant", variant]
    assert run_main(argv) == 0, capsys.readouterr()
    row = pd.read_csv(tmp_path / "results.csv").iloc[0]
    assert row["engine"] == fmt and row["precision"] == prec
    assert isinstance(row["parity_metric"], str) and row["parity_metric"]
    assert row["weights"] == "random" and row["invalid_embeddings"] == 0


def test_compile_engine_through_harness(tmp_path, capsys):
    # the aot_eager backend: the harness's wiring, without inductor's code generation (the
    # slow part: its outputs are checked by test_compile_engine_matches_eager and the AOTI rows)
    model, task = "distilbert-sentiment-tiny", "classification"
    argv = [
        "--model",
        model,
        "--task",
        task,
        *"--engine compile --compile-backend aot_eager --inputs-per-request 1,4 --duration 0.2 --min-calls 2 --num-samples 16 --output-dir".split(),
        str(tmp_path),
    ]
    assert run_main(argv) == 0, capsys.readouterr()
    df = pd.read_csv(tmp_path / "results.csv")
    assert df["engine"].tolist() == ["compile", "compile"]
    cfg = json.loads(df["config_json"][0])
    assert cfg["engine"]["compile_backend"] == "aot_eager"
    assert cfg["engine_info"]["compile_backend"] == "aot_eager"
    assert cfg["engine_info"]["compile_seconds"] >= 0


def test_an_unknown_compile_backend_is_refused_in_one_line(tmp_path, capsys):
    argv = [
        *"--model distilbert-sentiment-tiny --task classification --engine compile".split(),
        *"--compile-backend nosuch --output-dir".split(),
        str(tmp_path),
    ]
    assert run_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--compile-backend 'nosuch' is not a torch.compile backend" in err[0]
    assert "inductor" in err[0]


def test_harness_exports_on_demand_then_reuses(tmp_path, capsys):
    argv = [
        *"--model bge-base-tiny --task embedding --engine onnx --inputs-per-request 2 --duration 0.2 --min-calls 1 --num-samples 8 --artifacts-dir".split(),
        str(tmp_path / "art"),
        "--output-dir",
        str(tmp_path / "res"),
    ]
    assert run_main(argv) == 0
    assert "exported in" in capsys.readouterr().out
    assert run_main([*argv, "--fresh"]) == 0
    assert "(reused)" in capsys.readouterr().out


def test_failed_parity_is_refused_unless_skipped(artifacts, tmp_path, capsys):
    import shutil

    src = artifacts["distilbert-sentiment-tiny", "onnx", "fp32", ""][1]
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    m = read_manifest(bad)
    m.parity = {"passed": False, "failures": ["batch 2 x 200 tokens: max |Δprob| 3e-01 > 1e-03"]}
    write_manifest(bad, m)
    argv = [
        *"--model distilbert-sentiment-tiny --engine onnx --artifact".split(),
        str(bad),
        *"--inputs-per-request 1 --duration 0.1 --min-calls 1 --num-samples 8 --output-dir".split(),
        str(tmp_path / "res"),
    ]
    assert run_main(argv) == 2
    err = capsys.readouterr().err
    assert (
        "did not pass parity (batch 2 x 200 tokens: max |Δprob|" in err and "--skip-parity" in err
    )
    assert run_main([*argv, "--skip-parity"]) == 0


def test_tampered_artifact_is_refused(artifacts, tmp_path, capsys):
    import shutil

    src = artifacts["gte-modernbert-tiny", "onnx", "fp32", ""][1]
    bad = tmp_path / "tampered"
    shutil.copytree(src, bad)
    with open(bad / "model.onnx", "ab") as f:
        f.write(b"\0")
    argv = [
        *"--model gte-modernbert-tiny --task embedding --engine onnx --artifact".split(),
        str(bad),
        *"--inputs-per-request 1 --duration 0.1 --output-dir".split(),
        str(tmp_path / "res"),
    ]
    assert run_main(argv) == 2
    assert "fails its sha256 check" in capsys.readouterr().err


def test_export_cli(tmp_path, capsys):
    out = tmp_path / "a"
    code = export_main(
        ["--model", "bge-base-tiny", "--format", "onnx", "--precision", "int8", "--out", str(out)]
    )
    text = capsys.readouterr().out
    assert code == 0 and "parity vs eager fp32: passed" in text
    manifest = json.loads((out / "manifest.json").read_text())
    for key in (
        *"task model_id weights format precision input_names dynamic_axes hardware tool_versions files parity".split(),
    ):
        assert manifest[key] not in (None, "", {}), key


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["--format", "tflite"], "unknown --format 'tflite'"),
        (["--format", "triton", "--precision", "fp16"], "fp16 Triton repositories need a GPU"),
        (["--format", "triton", "--client-max-batch", "64"], "client_max_batch (64) must be <="),
        (["--format", "triton", "--preferred-batch-sizes", "4,x"], "--preferred-batch-sizes"),
        (["--format", "onnx", "--precision", "bf16"], "supports --precision fp32, fp16, int8"),
        (["--format", "onnx", "--variant", "turbo"], "supports --variant"),
        (["--format", "onnx", "--precision", "fp16"], "fp16 ONNX targets GPUs"),
        (["--format", "trt", "--precision", "fp16"], "tensorrt"),
        (["--format", "neuron", "--precision", "bf16"], "torch-neuronx"),
        (["--format", "aoti", "--precision", "fp16"], "fp16 AOTInductor packages need a GPU"),
    ],
)
def test_export_cli_errors_are_one_line(tmp_path, capsys, argv, expected):
    code = export_main(["--model", "bge-base-tiny", "--out", str(tmp_path / "x"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and expected in err
    assert len(err.strip().splitlines()) == 1, err


def test_exporter_registry_errors():
    with pytest.raises(ConfigError):
        exporter_class("tflite")
    assert exporter_class("triton").__name__ == "TritonExporter"
    with pytest.raises(MissingDependency):
        ensure_artifact(
            ExportConfig(
                model="bge-base-tiny", format="trt", precision="fp16", out="unused", device="cuda"
            )
        )


@pytest.mark.parametrize("model", COMPILED_MODELS)
def test_compile_engine_matches_eager(model):
    from dataclasses import replace

    from engines import EngineConfig, create_engine
    from exporters.parity import compare

    cfg = EngineConfig(engine="eager", model=model)
    with create_engine(cfg) as ref, create_engine(replace(cfg, engine="compile")) as cand:
        verdict = compare(ref, cand, "fp32")
    assert verdict["passed"], verdict["failures"]


# --------------------------------------------------------------------------- --out safety
def _export_cli(out, *extra):
    from harness.export import main

    return main(
        ["--model", "distilbert-sentiment-tiny", "--format", "onnx", "--weights", "random"]
        + ["--out", str(out), *extra]
    )


def test_export_refuses_a_folder_that_is_not_an_artifact_and_keeps_its_files(tmp_path, capsys):
    (tmp_path / "v" / "sub").mkdir(parents=True)
    (tmp_path / "v" / "important.txt").write_text("x")
    assert _export_cli(tmp_path / "v") == 2
    err = capsys.readouterr().err
    assert "not a billionbench artifact" in err and "Traceback" not in err
    assert (tmp_path / "v" / "important.txt").read_text() == "x"
    assert (tmp_path / "v" / "sub").is_dir()


def test_export_replaces_an_artifact_only_with_force(tmp_path, capsys):
    out = tmp_path / "a"
    assert _export_cli(out) == 0
    first = (out / "manifest.json").read_text()
    assert _export_cli(out) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == first  # untouched
    assert _export_cli(out, "--force") == 0
    assert (out / "model.onnx").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_export_to_a_file_or_an_unwritable_path_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert _export_cli(tmp_path / "f") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file" in err[0]
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permissions: a file below a file instead
            target = tmp_path / "f" / "below"
        else:
            target = ro / "a"
        assert _export_cli(target) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in err[0]
    finally:
        ro.chmod(0o700)


def test_onnx_session_options_follow_the_engine_options():
    import onnxruntime as ort

    from engines.onnxruntime import OnnxOptions, session_options

    opts = session_options(ort, OnnxOptions(graph_level="basic", spinning="off"), 2)
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 2
    default = session_options(ort, OnnxOptions(), None)
    assert default.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert default.get_session_config_entry("session.intra_op.allow_spinning") == "1"
