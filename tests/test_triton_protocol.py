"""The Triton protocol on our server: model config, statistics, repository index, KServe v2
gRPC, perf_analyzer over HTTP and gRPC, and the load generator's gRPC protocol."""

from __future__ import annotations

import json
import sys
import urllib.request

import numpy as np
import pytest

from core.net import free_port
from engines.models import get_spec
from serving.triton_api import RequestTimes, model_config, model_statistics, repository_index

EMB = "bge-base-tiny"
CLS = "distilbert-sentiment-tiny"
TEXTS = ["first question about history", "second", "a third, longer text about the weather"]


def _get(url: str, path: str, method: str = "GET") -> tuple[int, dict]:
    data = b"{}" if method == "POST" else None
    req = urllib.request.Request(url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Served:
    """`python -m harness.serve` with HTTP and gRPC on loopback, stopped at exit."""

    def __init__(self, model: str, engine: str, tmp_path, *extra: str):
        from core.processes.bench_server import ServerProcess
        from harness.config import serve_command

        self.grpc_port = free_port()
        argv = ["--engine", engine, "--model", model, "--task", get_spec(model).task]
        argv += ["--grpc-port", str(self.grpc_port)]
        argv += ["--max-queue-delay-ms", "2", "--max-request-inputs", "64", *extra]
        self.proc = ServerProcess(
            serve_command(*argv), free_port(), tmp_path / f"serve-{model}.log", 300
        )
        self.url = self.proc.url
        self.port = self.proc.port
        self.grpc = f"127.0.0.1:{self.grpc_port}"

    def __enter__(self) -> Served:
        self.proc.start()
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stop()


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    extra = ("--fake-latency-ms", "1")
    with Served(EMB, "fake", tmp_path_factory.mktemp("fake"), *extra) as s:
        yield s


# ------------------------------------------------------------------------- JSON builders
def test_model_config_is_triton_shaped():
    cfg = model_config(
        get_spec(CLS), max_batch_size=32, queue_delay_ms=2.5, device="cpu", parameters={"a": 1}
    )
    assert cfg["name"] == CLS and cfg["max_batch_size"] == 32
    assert cfg["input"] == [
        {"name": "TEXT", "data_type": "TYPE_STRING", "format": "FORMAT_NONE", "dims": [1]}
    ]
    out = {o["name"]: o for o in cfg["output"]}
    assert out["probabilities"]["data_type"] == "TYPE_FP32"
    assert out["probabilities"]["dims"] == [get_spec(CLS).num_labels]
    assert out["labels"] == {
        "name": "labels",
        "data_type": "TYPE_STRING",
        "dims": [1],
        "reshape": {"shape": []},
    }
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == 2500
    assert cfg["instance_group"][0]["kind"] == "KIND_CPU"
    assert cfg["parameters"] == {"a": {"string_value": "1"}}


def test_statistics_and_index_json():
    from core.measure import Latency
    from serving.batcher import BatcherStats

    none = Latency.from_ns([])
    b = BatcherStats(3, 0, 4, 0, 0, 2, 0, 5, {2: 1, 3: 1}, 1, 1, 0.0, none, none, 700, 900)
    times = RequestTimes()
    times.add(True, 1000, 100, 10)
    times.add(False, 50)
    (m,) = model_statistics(EMB, times, b)["model_stats"]
    assert (m["inference_count"], m["execution_count"]) == (5, 2)
    s = m["inference_stats"]
    assert s["success"] == {"count": 1, "ns": 1000} and s["fail"] == {"count": 1, "ns": 50}
    # every phase counts successful requests (perf_analyzer refuses unequal counts)
    assert s["queue"] == {"count": 1, "ns": 700}
    assert s["compute_infer"] == {"count": 1, "ns": 900}
    assert s["compute_input"] == {"count": 1, "ns": 100}
    assert s["compute_output"] == {"count": 1, "ns": 10}
    assert repository_index(EMB) == [{"name": EMB, "version": "1", "state": "READY", "reason": ""}]


# ------------------------------------------------------------------------- HTTP routes
@pytest.mark.tritonclient
@pytest.mark.grpc
def test_http_config_stats_index(fake_server):
    import tritonclient.http as httpclient

    s = fake_server
    status, cfg = _get(s.url, f"/v2/models/{EMB}/config")
    assert status == 200 and cfg["max_batch_size"] == 64
    assert cfg["output"][0] == {"name": "embeddings", "data_type": "TYPE_FP32", "dims": [64]}
    assert _get(s.url, "/v2/models/nope/config")[0] == 404
    status, index = _get(s.url, "/v2/repository/index", "POST")
    assert status == 200 and index[0]["state"] == "READY"
    client = httpclient.InferenceServerClient(f"127.0.0.1:{s.port}")
    before = client.get_inference_statistics(EMB)["model_stats"][0]
    inp = httpclient.InferInput("TEXT", [2, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[t] for t in TEXTS[:2]], dtype=object))
    assert client.infer(EMB, [inp]).as_numpy("embeddings").shape == (2, 64)
    after = client.get_inference_statistics(EMB)["model_stats"][0]
    assert client.get_model_config(EMB)["name"] == EMB
    assert client.get_model_repository_index()[0]["name"] == EMB
    client.close()
    for key, grew_by in (("inference_count", 2), ("execution_count", 1)):
        assert after[key] - before[key] >= grew_by
    ok0, ok1 = before["inference_stats"]["success"], after["inference_stats"]["success"]
    assert ok1["count"] == ok0["count"] + 1 and ok1["ns"] > ok0["ns"]
    assert after["inference_stats"]["compute_infer"]["ns"] > 0


# ------------------------------------------------------------------------- gRPC
@pytest.mark.tritonclient
@pytest.mark.grpc
def test_grpc_health_metadata_config_stats(fake_server):
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(fake_server.grpc)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(EMB)
    assert not c.is_model_ready("nope")
    assert c.get_server_metadata().name == "billionbench"
    meta = c.get_model_metadata(EMB, as_json=True)
    assert meta["inputs"][0]["name"] == "TEXT" and meta["outputs"][0]["name"] == "embeddings"
    cfg = c.get_model_config(EMB, as_json=True)["config"]
    assert cfg["max_batch_size"] == 64 and cfg["input"][0]["data_type"] == "TYPE_STRING"
    assert int(cfg["dynamic_batching"]["max_queue_delay_microseconds"]) == 2000
    stats = c.get_inference_statistics(EMB, as_json=True)["model_stats"][0]
    assert stats["name"] == EMB and "inference_stats" in stats
    assert c.get_model_repository_index(as_json=True)["models"][0]["state"] == "READY"
    c.close()


@pytest.mark.tritonclient
@pytest.mark.grpc
def test_grpc_errors_are_status_codes(fake_server):
    import grpc
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    c = grpcclient.InferenceServerClient(fake_server.grpc)

    def infer(model, shape, data, name="TEXT"):
        inp = grpcclient.InferInput(name, shape, "BYTES")
        inp.set_data_from_numpy(np.array(data, dtype=object))
        return c.infer(model, [inp])

    cases = [
        (("nope", [1], ["x"]), grpc.StatusCode.NOT_FOUND, "unknown model"),
        ((EMB, [1, 2], [["a", "b"]]), grpc.StatusCode.INVALID_ARGUMENT, "shape"),
        ((EMB, [1], ["x"], "WRONG"), grpc.StatusCode.INVALID_ARGUMENT, "missing input"),
        ((EMB, [1], ["   "]), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        ((EMB, [65], ["x"] * 65), grpc.StatusCode.INVALID_ARGUMENT, "limit"),
    ]
    for args, code, words in cases:
        with pytest.raises(InferenceServerException) as e:
            infer(*args)
        assert e.value.status() == str(code) and words in e.value.message()
        assert "\n" not in e.value.message()
    assert c.is_server_live()  # and it keeps serving
    c.close()


@pytest.mark.tritonclient
def test_grpc_and_http_give_the_in_process_numbers(tmp_path):
    """tritonclient.grpc and tritonclient.http agree, and both equal the in-process engine."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from engines import create_engine
    from engines.registry import engine_config

    local = create_engine(engine_config("eager", CLS))
    local.load()
    want = local.predict(TEXTS)
    local.close()
    got = {}
    with Served(CLS, "eager", tmp_path) as s:
        for name, mod, url in (
            ("http", httpclient, f"127.0.0.1:{s.port}"),
            ("grpc", grpcclient, s.grpc),
        ):
            c = mod.InferenceServerClient(url)
            inp = mod.InferInput("TEXT", [len(TEXTS), 1], "BYTES")
            inp.set_data_from_numpy(np.array([[t] for t in TEXTS], dtype=object))
            res = c.infer(CLS, [inp])
            labels = [x.decode() for x in res.as_numpy("labels").reshape(-1)]
            got[name] = (res.as_numpy("probabilities"), labels)
            c.close()
    (hp, hl), (gp, gl) = got["http"], got["grpc"]
    assert hl == gl == list(want.labels)
    assert np.array_equal(hp, gp)
    assert np.allclose(gp, want.values, atol=1e-5)


@pytest.mark.grpc
def test_taken_grpc_port_is_a_one_line_error(fake_server):
    import subprocess

    argv = [sys.executable, "-m", "harness.serve", "--engine", "fake", "--model", EMB]
    argv += ["--task", "embedding", "--port", str(free_port())]
    argv += ["--grpc-port", str(fake_server.grpc_port)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2  # every error exits 2
    assert f"cannot listen on 127.0.0.1:{fake_server.grpc_port} for gRPC" in done.stderr


# ------------------------------------------------------------------------- load generator
@pytest.mark.tritonclient
def test_load_generator_speaks_grpc(fake_server):
    from loadgen import Target, run_closed_loop
    from workloads import Workload

    spec = get_spec(EMB)
    wl = Workload(TEXTS, None, np.full(len(TEXTS), 8, dtype=np.int64), "test")
    target = Target(
        fake_server.grpc, protocol="kserve-grpc", model=EMB, task="embedding", dim=spec.dim
    )
    assert target.url == f"grpc://{fake_server.grpc}"
    res = run_closed_loop(target, wl, vus=4, iterations=40, inputs_per_request=2)
    assert res.successful_requests == 40 and res.failed_requests == 0
    assert res.invalid_embeddings == 0 and res.to_row()["protocol"] == "kserve-grpc"
    wrong = Target(fake_server.grpc, protocol="kserve-grpc", model="nope", task="embedding")
    from loadgen import TargetError

    with pytest.raises(TargetError, match="NOT_FOUND"):
        run_closed_loop(wrong, wl, vus=1, iterations=2)


def test_grpc_target_takes_host_port():
    from core.errors import ConfigError
    from loadgen import Target

    assert Target("grpc://h:1", protocol="kserve-grpc", model="m").url == "grpc://h:1"
    with pytest.raises(ConfigError, match="host:port"):
        Target("http://h:1", protocol="kserve-grpc", model="m")


@pytest.mark.tritonclient
def test_sweep_over_grpc_against_our_server(tmp_path):
    """One sweep point over gRPC against a server the sweep starts with a gRPC port."""
    from harness import sweep
    from harness.results import ResultsStore

    out = tmp_path / "out"
    argv = ["--engine", "fake", "--model", EMB, "--task", "embedding", "--protocol", "kserve-grpc"]
    argv += ["--max-batch-sizes", "8"]
    argv += ["--vus-start", "2", "--vus-max", "2", "--iterations", "20", "--repeats", "1"]
    argv += ["--no-ceiling", "--max-duration", "5", "--output-dir", str(out)]
    assert sweep.main(argv) == 0
    rows = ResultsStore(str(out)).read()
    assert list(rows["protocol"]) == ["kserve-grpc"] and rows["failed_requests"].sum() == 0


# ------------------------------------------------------------------------- perf_analyzer
@pytest.mark.perf_analyzer
@pytest.mark.tritonclient
@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_perf_analyzer_drives_our_server(fake_server, tmp_path, transport):
    """harness.run --engine triton --load perf_analyzer against harness.serve: rows come back."""
    from harness import run
    from harness.results import ResultsStore

    url = fake_server.url if transport == "http" else fake_server.grpc
    out = tmp_path / "out"
    argv = ["--engine", "triton", "--model", EMB, "--task", "embedding"]
    argv += ["--load", "perf_analyzer"]
    argv += ["--triton-url", url, "--transport", transport, "--inputs-per-request", "1"]
    argv += ["--concurrency", "2", "--duration", "1", "--output-dir", str(out)]
    assert run.main(argv) == 0
    rows = ResultsStore(str(out)).read()
    assert len(rows) == 1 and rows["protocol"].iloc[0] == f"triton-{transport}"
    assert rows["throughput_req_per_sec"].iloc[0] > 0 and rows["p50_latency_ms"].iloc[0] > 0
    assert rows["vendor"].iloc[0] == "billionbench"
    # the server-side breakdown comes from our statistics extension
    assert rows["server_compute_infer_ms"].iloc[0] > 0 and rows["server_queue_ms"].iloc[0] > 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
