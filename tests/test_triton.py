"""Triton: protobuf configs, the repository writer, and a real bundled tritonserver on loopback."""

from __future__ import annotations

import concurrent.futures as cf
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigError
from engines.base import EngineConfig
from engines.models import get_spec
from engines.registry import engine_config

pytestmark = pytest.mark.tritonclient

from exporters.triton import (  # noqa: E402
    BACKENDS,
    TritonOptions,
    encoder_config,
    ensemble_config,
    parse_config,
    postprocess_config,
    to_text,
    tokenizer_config,
)

TINY = "distilbert-sentiment-tiny"
TEXTS = [
    "great product, arrived fast",
    "terrible service, never again",
    "ok",
    "the package arrived broken and support never answered my refund question",
]


# --------------------------------------------------------------------------- configs, no server


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("model", [TINY, "bge-base-tiny"])
def test_every_backend_config_round_trips_through_protobuf(backend, model):
    spec = get_spec(model)
    opts = TritonOptions(backend=backend, instances=2, preferred_batch_sizes=(4, 8))
    for cfg in (
        encoder_config(spec, opts, 64),
        tokenizer_config(spec, opts, 128),
        postprocess_config(spec, opts, 64),
        ensemble_config(spec, opts),
    ):
        text = to_text(cfg)
        back = parse_config(text)
        assert back == cfg
        assert to_text(back) == text
    enc = encoder_config(spec, opts, 64)
    platform, _ = BACKENDS[backend]
    assert (enc.backend or enc.platform) == platform
    assert enc.instance_group[0].count == 2
    assert list(enc.dynamic_batching.preferred_batch_size) == [4, 8]


def test_kind_gpu_only_for_gpu_targets():
    spec = get_spec(TINY)
    cpu = encoder_config(spec, TritonOptions(backend="onnxruntime"))
    gpu = encoder_config(spec, TritonOptions(backend="onnxruntime", gpu=True))
    assert "KIND_CPU" in to_text(cpu) and "KIND_GPU" not in to_text(cpu)
    assert "KIND_GPU" in to_text(gpu)
    # ONNX on a GPU gets the TensorRT accelerator in FP16; on CPU it does not
    assert 'precision_mode"' in to_text(gpu) and '"FP16"' in to_text(gpu)
    assert "gpu_execution_accelerator" not in to_text(cpu)
    # the tokenizer and postprocess run on the host, even for GPU targets
    assert "KIND_CPU" in to_text(tokenizer_config(spec, TritonOptions(gpu=True), 128))


def test_dynamic_batching_off_and_libtorch_names():
    spec = get_spec(TINY)
    cfg = encoder_config(spec, TritonOptions(backend="pytorch", dynamic_batching=False))
    assert not cfg.HasField("dynamic_batching")
    assert cfg.output[0].name == "logits__0"
    ens = ensemble_config(spec, TritonOptions(backend="pytorch"))
    assert "logits__0" in to_text(ens)


@pytest.mark.parametrize(
    "text, field",
    [
        ('name: "x"\nbackend: "python"\nmax_batch_sise: 4\n', "max_batch_sise"),
        ('name: "x"\nbackend: "python"\nmax_batch_size: "four"\n', "max_batch_size"),
        ('name: "x"\nbackend: "python"\ninstance_group { count: 0 kind: KIND_CPU }\n', "count"),
        ('name: "x"\nbackend: "python"\ninput { name: "a" data_type: TYPE_FP32 }\n', "dims"),
        ('name: "x"\nmax_batch_size: 4\n', "backend"),
        ('name: "x"\nbackend: "python"\ndynamic_batching { }\n', "max_batch_size"),
    ],
)
def test_malformed_config_is_rejected_naming_the_field(text, field):
    with pytest.raises(ConfigError) as e:
        parse_config(text, "repo/m/config.pbtxt")
    msg = str(e.value)
    assert field in msg and "repo/m/config.pbtxt" in msg and "\n" not in msg


def test_options_are_validated():
    with pytest.raises(ConfigError, match="backend"):
        TritonOptions(backend="tensorflow")
    with pytest.raises(ConfigError, match="client_max_batch"):
        TritonOptions(max_batch_size=4, client_max_batch=8)
    with pytest.raises(ConfigError, match="preferred"):
        TritonOptions(max_batch_size=4, client_max_batch=4, preferred_batch_sizes=(8,))


# --------------------------------------------------------------------------- repository writer


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The exporter's repository: tiny DistilBERT, python backend, 2 CPU instances."""
    from exporters.api import ensure_artifact
    from exporters.base import ExportConfig
    from exporters.triton import TritonExporter

    out = tmp_path_factory.mktemp("repos") / "tiny-python"
    cfg = ExportConfig(
        model=TINY, format="triton", out=str(out), variant="python", weights="random"
    )
    opts = TritonOptions(instances=2, max_batch_size=16, max_queue_delay_us=20000)
    manifest, reused = ensure_artifact(cfg, TritonExporter(opts))
    assert not reused and manifest.parity["passed"] is True
    return out


def test_repository_layout_and_readme(repo):
    from exporters.triton import repository_models

    models = repository_models(repo)
    assert set(models) == {"tokenizer", "encoder", "postprocess", TINY}
    enc = models["encoder"]
    assert enc.backend == "python" and enc.max_batch_size == 16
    assert enc.dynamic_batching.max_queue_delay_microseconds == 20000
    assert enc.instance_group[0].count == 2 and "KIND_CPU" in to_text(enc)
    assert (repo / "encoder/1/model.onnx").exists() and (repo / "encoder/1/model.py").exists()
    for name, cls in (("tokenizer", "TokenizerModel"), ("postprocess", "PostprocessModel")):
        shim = (repo / name / "1" / "model.py").read_text()
        assert f"from engines.triton.backend import {cls} as TritonPythonModel" in shim
    assert models[TINY].platform == "ensemble"
    readme = (repo / "README.md").read_text()
    assert "tritonserver --model-repository" in readme and "nvcr.io/nvidia/tritonserver" in readme
    manifest = json.loads((repo / "manifest.json").read_text())
    assert manifest["format"] == "triton" and manifest["weights"] == "random"


def test_cli_refuses_tensorrt_on_cpu_in_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "harness.export", "--model", TINY, "--format", "triton"]
        + ["--backend", "tensorrt", "--out", str(tmp_path / "r"), "--device", "cpu"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert r.returncode == 2
    assert "tensorrt" in r.stderr and "GPU" in r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------- the real server


@pytest.fixture(scope="module")
def server(repo):
    from core.processes.tritonserver import TritonServer

    s = TritonServer(repo, models=[TINY]).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def eager():
    from engines.registry import create_engine

    with create_engine(EngineConfig(engine="eager", model=TINY, weights="random")) as e:
        yield e


@pytest.mark.triton
@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_triton_matches_eager_labels_and_probabilities(server, eager, transport):
    from engines.registry import create_engine

    url = server.url if transport == "http" else server.grpc_url
    cfg = engine_config("triton", TINY, triton_url=url, transport=transport)
    want = eager.predict(TEXTS)
    with create_engine(cfg) as tri:
        remote = tri.predict_remote(TEXTS)  # strings in: the ensemble tokenizes and pools
        local = tri.predict(TEXTS)  # tensors in: the encoder model only
    for got in (remote, local):
        assert got.labels == want.labels
        np.testing.assert_allclose(got.values, want.values, atol=1e-4)


@pytest.mark.triton
def test_dynamic_batching_happens_under_concurrency(server):
    from engines.registry import create_engine

    cfg = engine_config("triton", TINY, triton_url=server.url)
    with create_engine(cfg) as tri:
        before = tri.server_stats()
        with cf.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: tri.predict_remote([TEXTS[i % 4]]), range(64)))
        after = tri.server_stats()
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 64
    assert executions < inferences  # requests were merged into batches


@pytest.mark.triton
def test_bad_requests_get_errors_and_the_server_keeps_serving(server):
    import urllib.error
    import urllib.request

    def post(body):
        req = urllib.request.Request(
            f"{server.url}/v2/models/{TINY}/infer", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    bad = {"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
    with pytest.raises(urllib.error.HTTPError) as e:
        post(bad)
    assert e.value.code == 400
    good = {"inputs": [{"name": "TEXT", "shape": [2, 1], "datatype": "BYTES", "data": ["", "ok"]}]}
    out = {o["name"]: o for o in post(good)["outputs"]}
    assert out["probabilities"]["shape"] == [2, 3]


@pytest.mark.triton
def test_load_generator_triton_protocol_validates_outputs(server):
    from loadgen import Target, run_closed_loop
    from workloads import Workload

    spec = get_spec(TINY)
    wl = Workload(TEXTS * 4, None, np.full(16, 8, dtype=np.int64), "test")
    target = Target(server.url, protocol="triton", model=TINY, task=spec.task, labels=spec.labels)
    res = run_closed_loop(target, wl, vus=4, iterations=24, max_duration_s=30, inputs_per_request=2)
    assert res.successful_requests == 24 and res.failed_requests == 0
    assert res.invalid_embeddings == 0


@pytest.mark.triton
def test_reload_through_repository_api_changes_the_instance_count(repo, tmp_path):
    from core.processes.tritonserver import TritonServer
    from exporters.triton import set_encoder_serving

    work = tmp_path / "repo"
    shutil.copytree(repo, work)
    with TritonServer(work, models=[TINY]) as s:
        set_encoder_serving(
            work,
            TritonOptions(
                instances=1, max_batch_size=4, client_max_batch=4, dynamic_batching=False
            ),
        )
        s.load("encoder")
        s.load(TINY)
        cfg = s._request("GET", "/v2/models/encoder/config")
        assert cfg["max_batch_size"] == 4
        assert cfg["instance_group"][0]["count"] == 1
        assert "dynamic_batching" not in cfg or not cfg["dynamic_batching"]
        assert s.model_ready(TINY)


def test_the_old_tritonserver_module_still_runs_as_a_command():
    r = subprocess.run(
        [sys.executable, "-m", "harness.tools", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert r.returncode == 0 and "prepare" in r.stdout and "serve" in r.stdout


# --------------------------------------------------------------------------- perf_analyzer

PA_CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
    "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,"
    "p90 latency,p95 latency,p99 latency,Avg latency,request/response,response wait\n"
    "4,1276.94,62,1215,10,67,1531,249,0,2984,3961,4451,6332,3126,62,3056\n"
)


def test_perf_analyzer_csv_becomes_result_rows():
    from core.processes.perf_analyzer import parse_csv
    from harness.results import COLUMNS
    from harness.scenarios.perf_analyzer_load import to_row

    (pa,) = parse_csv(PA_CSV)
    row = to_row(pa, batch=2)
    assert row["vus"] == 4 and row["throughput_req_per_sec"] == pytest.approx(1276.94)
    assert row["p99_latency_ms"] == pytest.approx(6.332)  # microseconds -> ms
    assert row["server_compute_infer_ms"] == pytest.approx(1.531)
    assert row["server_queue_ms"] == pytest.approx(0.010)
    assert set(row) <= set(COLUMNS)


class _Broken:
    """An ensemble that answers with empty tensors: perf_analyzer would not notice."""

    spec = get_spec(TINY)

    def predict_remote(self, texts):
        from engines.pipeline import Prediction

        return Prediction(np.zeros((0,), dtype=np.float32), [])


def test_sample_validation_catches_empty_outputs():
    from harness.scenarios.perf_analyzer_load import validate_sample

    bad, problem = validate_sample(_Broken(), ["a", "b"], n=4)
    assert bad == 4 and "shape" in problem


@pytest.mark.triton
def test_sample_validation_passes_on_the_real_ensemble(server):
    from engines.registry import create_engine
    from harness.scenarios.perf_analyzer_load import validate_sample

    cfg = engine_config("triton", TINY, triton_url=server.url)
    with create_engine(cfg) as tri:
        assert validate_sample(tri, TEXTS, n=4) == (0, None)


# --------------------------------------------------------------------------- config sweep


@pytest.mark.triton
def test_config_sweep_writes_rows_with_settings_and_resumes(repo, tmp_path, capsys):
    from harness.results import ResultsStore
    from harness.sweep import main

    argv = [
        "--engine", "triton", "--model", TINY, "--weights", "random", "--artifact", str(repo),
        "--search", "instances,delay", "--instances", "1,2", "--max-batch-sizes", "8",
        "--queue-delays-us", "off,1000", "--concurrency", "4", "--iterations", "24",
        "--max-duration", "5", "--num-samples", "32", "--no-ceiling",
        "--output-dir", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Triton config sweep" in out and "best" in out
    df = ResultsStore(str(tmp_path)).read()
    assert len(df) == 4
    assert sorted(df["triton_instances"].tolist()) == [1, 1, 2, 2]
    assert df["triton_dynamic_batching"].astype(str).str.lower().tolist().count("true") == 2
    assert (df["failed_requests"] == 0).all() and (df["server_requests"] > 0).all()
    assert (df["vendor"] == "triton").all() and (df["weights"] == "random").all()
    assert main(argv) == 0  # resume: nothing measured twice
    assert "already measured" in capsys.readouterr().out
    assert len(ResultsStore(str(tmp_path)).read()) == 4


@pytest.mark.triton
@pytest.mark.perf_analyzer
def test_perf_analyzer_runs_against_the_bundled_server(server):
    from core.processes.perf_analyzer import find_binary, run
    from harness.scenarios.perf_analyzer_load import to_row

    binary, env = find_binary()
    rows = run(
        binary, env, url=server.url, model=TINY, texts=TEXTS, concurrency=[2], measurement_ms=1500
    )
    row = to_row(rows[0], batch=1)
    assert row["vus"] == 2 and row["throughput_req_per_sec"] > 0
    assert row["p99_latency_ms"] >= row["p50_latency_ms"] > 0
