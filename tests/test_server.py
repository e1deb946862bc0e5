"""The HTTP server over the dynamic batcher: protocols, limits, malformed input, 429s."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from helpers import ServerThread  # noqa: E402

from engines import create_engine  # noqa: E402
from engines.registry import engine_config
from serving.batcher import BatcherConfig, DynamicBatcher  # noqa: E402
from serving.server import Server, ServerLimits  # noqa: E402


class Running(ServerThread):
    """A server on 127.0.0.1 in a background thread, stopped at exit."""

    def __init__(self, model: str, engine: str = "fake", limits=None, latency_ms=2.0, **batcher):
        cfg = engine_config(engine, model, fake_latency_ms=latency_ms, fake_per_input_ms=0.1)
        eng = create_engine(cfg)
        eng.load()
        batch = DynamicBatcher(eng, BatcherConfig(**batcher))
        super().__init__(Server(eng, batch, limits or ServerLimits(max_body_bytes=2**20)))


def post(url, path, body=None, raw=None, headers=None, timeout=10):
    import urllib.error
    import urllib.request

    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(
        url + path,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def get(url, path):
    import urllib.request

    with urllib.request.urlopen(url + path, timeout=10) as r:
        return r.status, r.read()


@pytest.fixture(scope="module")
def embedder():
    with Running("bge-base-tiny") as s:
        yield s


@pytest.fixture(scope="module")
def classifier():
    with Running("distilbert-sentiment-tiny") as s:
        yield s


def test_health_and_metadata(embedder):
    assert get(embedder.url, "/v2/health/ready")[0] == 200
    status, body = get(embedder.url, "/v2/models/bge-base-tiny")
    meta = json.loads(body)
    assert meta["inputs"][0]["name"] == "TEXT" and meta["outputs"][0]["shape"] == [-1, 64]


def test_openai_embeddings_match_the_engine(embedder):
    texts = ["the river is long", "a city of music"]
    status, body, _ = post(embedder.url, "/v1/embeddings", {"input": texts, "model": "x"})
    assert status == 200
    data = json.loads(body)["data"]
    got = np.array([d["embedding"] for d in sorted(data, key=lambda d: d["index"])])
    want = embedder.engine.predict(texts).values
    assert np.allclose(got, want, atol=1e-6)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_classify(classifier):
    status, body, _ = post(classifier.url, "/classify", {"input": ["great", "awful service"]})
    assert status == 200
    data = json.loads(body)["data"]
    assert len(data) == 2 and {d["label"] for d in data[0]} == {"positive", "neutral", "negative"}
    assert abs(sum(d["score"] for d in data[0]) - 1) < 1e-5


def test_kserve_json(classifier):
    body = {
        "inputs": [{"name": "TEXT", "shape": [2], "datatype": "BYTES", "data": ["good", "bad"]}]
    }
    status, raw, _ = post(classifier.url, "/v2/models/distilbert-sentiment-tiny/infer", body)
    assert status == 200
    outs = {o["name"]: o for o in json.loads(raw)["outputs"]}
    assert outs["probabilities"]["shape"] == [2, 3] and len(outs["labels"]["data"]) == 2


@pytest.mark.tritonclient
def test_tritonclient_gets_correct_outputs(embedder):
    import tritonclient.http as httpclient

    texts = ["first question about history", "second", "third one here"]
    client = httpclient.InferenceServerClient(f"127.0.0.1:{embedder.port}")
    assert client.is_server_ready() and client.is_model_ready("bge-base-tiny")
    for binary in (True, False):
        inp = httpclient.InferInput("TEXT", [len(texts)], "BYTES")
        inp.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary)
        out = httpclient.InferRequestedOutput("embeddings", binary_data=binary)
        res = client.infer("bge-base-tiny", [inp], outputs=[out])
        got = res.as_numpy("embeddings")
        assert got.shape == (3, 64)
        assert np.allclose(got, embedder.engine.predict(texts).values, atol=1e-6)
    client.close()


def test_batcher_batches_under_concurrency(embedder):
    from concurrent.futures import ThreadPoolExecutor

    before = sum(v for k, v in embedder.batcher.stats().batch_size_histogram.items() if k > 1)
    with ThreadPoolExecutor(16) as pool:
        codes = list(
            pool.map(
                lambda i: post(embedder.url, "/v1/embeddings", {"input": [f"text number {i}"]})[0],
                range(64),
            )
        )
    assert codes == [200] * 64
    after = embedder.batcher.stats().batch_size_histogram
    assert sum(v for k, v in after.items() if k > 1) > before


MALFORMED = [
    ("/v1/embeddings", b"{not json"),
    ("/v1/embeddings", json.dumps({"input": []}).encode()),
    ("/v1/embeddings", json.dumps({"input": [1, 2]}).encode()),
    ("/v1/embeddings", json.dumps({"input": [""]}).encode()),
    ("/v1/embeddings", json.dumps({"input": None}).encode()),
    ("/v1/embeddings", json.dumps({"inputs": ["x"]}).encode()),
    ("/v1/embeddings", json.dumps(["x"]).encode()),
    ("/v1/embeddings", json.dumps({"input": ["word " * 5000]}).encode()),
    ("/v1/embeddings", json.dumps({"input": ["x"] * 10_000}).encode()),
    ("/v2/models/bge-base-tiny/infer", b"[]"),
    ("/v2/models/bge-base-tiny/infer", json.dumps({"inputs": []}).encode()),
    (
        "/v2/models/bge-base-tiny/infer",
        json.dumps(
            {"inputs": [{"name": "TEXT", "shape": [3], "datatype": "BYTES", "data": ["a"]}]}
        ).encode(),
    ),
    (
        "/v2/models/bge-base-tiny/infer",
        json.dumps(
            {"inputs": [{"name": "TEXT", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
        ).encode(),
    ),
    (
        "/v2/models/bge-base-tiny/infer",
        json.dumps(
            {"inputs": [{"name": "IDS", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}
        ).encode(),
    ),
    (
        "/v2/models/bge-base-tiny/infer",
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "TEXT",
                        "shape": [2, 2],
                        "datatype": "BYTES",
                        "data": ["a", "b", "c", "d"],
                    }
                ]
            }
        ).encode(),
    ),
    ("/v2/models/other/infer", json.dumps({"inputs": []}).encode()),
    ("/classify", json.dumps({"input": ["x"]}).encode()),  # embedder has no /classify
    ("/v2/models/bge-base-tiny/infer", b"\xff\xfe garbage"),
]


def test_200_malformed_requests_get_4xx_and_the_server_keeps_serving(embedder):
    codes = []
    for i in range(200):
        path, raw = MALFORMED[i % len(MALFORMED)]
        status, body, _ = post(embedder.url, path, raw=raw)
        codes.append(status)
        assert 400 <= status < 500, (path, raw[:60], status, body[:200])
        reason = json.loads(body)["error"]
        assert reason and "\n" not in reason
    assert post(embedder.url, "/v1/embeddings", {"input": ["still alive"]})[0] == 200


def test_oversized_body_is_413(embedder):
    status, body, _ = post(embedder.url, "/v1/embeddings", raw=b"x" * (2**20 + 10))
    assert status == 413 and "bytes" in json.loads(body)["error"]


def test_full_queue_answers_429_with_retry_after():
    from concurrent.futures import ThreadPoolExecutor

    # slow forward passes and a 4-input queue: a burst of 24 requests must overflow it
    with Running("bge-base-tiny", latency_ms=200.0, max_queue_inputs=4, max_batch_size=2) as s:
        with ThreadPoolExecutor(24) as pool:
            results = list(
                pool.map(
                    lambda i: post(s.url, "/v1/embeddings", {"input": ["a", "b"]}, timeout=30),
                    range(24),
                )
            )
        codes = [r[0] for r in results]
        assert 429 in codes and 200 in codes and set(codes) <= {200, 429}
        retry = [r[2].get("Retry-After") for r in results if r[0] == 429]
        assert all(r and int(r) >= 1 for r in retry)
        assert post(s.url, "/v1/embeddings", {"input": ["after"]})[0] == 200


def test_metrics_are_prometheus_text(embedder):
    post(embedder.url, "/v1/embeddings", {"input": ["m"]})
    status, body = get(embedder.url, "/metrics")
    text = body.decode()
    for name in (
        "bb_queue_depth",
        "bb_batch_size_bucket",
        "bb_request_latency_seconds_count",
        "bb_requests_total",
    ):
        assert name in text


def test_tiny_real_model_over_http_matches_in_process():
    with Running("distilbert-sentiment-tiny", engine="eager") as s:
        texts = ["the delivery was slow", "excellent value", "ok"]
        status, body, _ = post(s.url, "/classify", {"input": texts})
        assert status == 200
        got = [{d["label"]: d["score"] for d in row} for row in json.loads(body)["data"]]
        want = s.engine.predict(texts)
        for row, probs in zip(got, want.values, strict=True):
            assert np.allclose([row[lab] for lab in s.engine.spec.labels], probs, atol=1e-5)


def test_metrics_exposition_names_and_values():
    from core.measure import Latency
    from serving.batcher import BatcherStats
    from serving.metrics import HttpMetrics, exposition

    http = HttpMetrics()
    http.observe("/v1/embeddings", 200, 0.02)
    http.observe("/v1/embeddings", 429, 0.001)
    none = Latency.from_ns([])
    stats = BatcherStats(
        queue_depth=3,
        pending_requests=1,
        requests_completed=4,
        requests_failed=0,
        rejected=1,
        batches=3,
        failed_batches=0,
        inputs=5,
        batch_size_histogram={2: 1, 1: 2},
        useful_tokens=30,
        padded_tokens=40,
        padding_ratio=0.25,
        forward_ms=none,
        queue_wait_ms=none,
    )
    lines = exposition(stats, http).splitlines()
    for line in (
        # prometheus_client writes every value as a float
        "bb_queue_depth 3.0",
        'bb_batch_size_bucket{le="1"} 2.0',
        'bb_batch_size_bucket{le="2"} 3.0',
        'bb_batch_size_bucket{le="+Inf"} 3.0',
        "bb_batch_size_sum 4.0",
        "bb_useful_tokens_total 30.0",
        "bb_padded_tokens_total 40.0",
        "bb_padding_ratio 0.25",
        "bb_rejected_total 1.0",
        'bb_requests_total{route="/v1/embeddings",status="200"} 1.0',
        'bb_requests_total{route="/v1/embeddings",status="429"} 1.0',
        'bb_request_latency_seconds_bucket{le="0.01"} 0.0',
        'bb_request_latency_seconds_bucket{le="0.025"} 1.0',
        'bb_request_latency_seconds_bucket{le="+Inf"} 1.0',
        "bb_request_latency_seconds_count 1.0",
    ):
        assert line in lines
    assert all(line.startswith(("# HELP bb_", "# TYPE bb_", "bb_")) for line in lines)


def test_every_task_has_a_codec_with_a_method_for_each_route_it_serves():
    from engines.models import TASKS
    from serving.codecs import CODECS

    assert set(CODECS) == set(TASKS)
    for codec in CODECS.values():
        for route, method in (
            ("embeddings", "embeddings"),
            ("embeddings_image", "embeddings"),
            ("classify", "classify"),
        ):
            assert route in codec.refuses or callable(getattr(codec, method, None)), (codec, route)
        assert codec.route.lstrip("/").replace("v1/", "") not in codec.refuses


def _busy(seconds: float) -> None:
    t = time.thread_time()
    while time.thread_time() - t < seconds:
        pass


@pytest.mark.proc
def test_cpu_split_counts_registered_threads_as_non_forward():
    """A registered thread's CPU is non-forward; an unregistered one's is forward."""
    import threading

    from serving import cpu

    f0, o0 = cpu.split()
    other = threading.Thread(target=lambda: (cpu.register_other(), _busy(0.3)))
    other.start()
    other.join(timeout=10)
    f1, o1 = cpu.split()  # the thread has ended: its CPU can no longer be told apart
    forward = threading.Thread(target=_busy, args=(0.3,))
    alive = threading.Event()

    def registered_and_alive():
        cpu.register_other()
        _busy(0.3)
        alive.wait(10)

    keep = threading.Thread(target=registered_and_alive)
    keep.start()
    forward.start()
    forward.join(timeout=10)
    time.sleep(0.05)
    f2, o2 = cpu.split()
    alive.set()
    keep.join(timeout=10)
    assert o2 - o1 >= 0.25  # the live registered thread's 0.3 s (10-ms ticks)
    assert f2 - f1 >= 0.25  # the unregistered thread's 0.3 s
    assert f1 >= f0 and o1 >= 0


def test_metrics_split_the_servers_cpu_and_the_sweep_reads_a_points_share(embedder):
    from loadgen.endpoint import server_columns

    _, body = get(embedder.url, "/metrics")
    before = {
        ln.split()[0]: float(ln.split()[1])
        for ln in body.decode().splitlines()
        if ln.startswith("bb_") and "{" not in ln
    }
    for _ in range(20):
        post(embedder.url, "/v1/embeddings", {"input": ["some text to embed"] * 4})
    _, body = get(embedder.url, "/metrics")
    after = {
        ln.split()[0]: float(ln.split()[1])
        for ln in body.decode().splitlines()
        if ln.startswith("bb_") and "{" not in ln
    }
    assert "bb_forward_cpu_seconds_total" in after and "bb_nonforward_cpu_seconds_total" in after
    cols = server_columns(before, after)
    assert cols["padding_ratio"] is not None and 0 <= cols["padding_ratio"] < 1
    if cols["server_cpu_s"]:  # 20 small requests may take under one 10-ms tick
        assert 0 <= cols["non_forward_cpu_share"] <= 1
    assert server_columns({}, {})["non_forward_cpu_share"] is None
