"""HTTP load generator against small aiohttp servers on 127.0.0.1 started here.

The test server speaks every protocol; what it returns is driven by the texts themselves
("status 503", "sleep 0.2", "nan", "dim 5", "scale 2", "label bogus", "multi 3", "short", "close").
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shutil
import zlib

import numpy as np
import pytest
from aiohttp import web  # noqa: E402
from helpers import FakeApp

from core.errors import BillionbenchError, ConfigError  # noqa: E402
from core.net import free_port  # noqa: E402
from harness.results import COLUMNS  # noqa: E402
from loadgen import (  # noqa: E402
    K6Missing,
    LoadResult,
    Samples,
    Target,
    TargetError,
    TargetUnreachable,
    k6_script,
    measure_ceiling,
    merge_results,
    parse_k6_summary,
    run_closed_loop,
    run_k6,
    run_open_loop,
)
from loadgen.loops import _summarise  # noqa: E402
from workloads import Workload  # noqa: E402

DIM = 8
LABELS = ("positive", "neutral", "negative")
TOKEN = "s3cret-token"


def workload(texts, labels=None) -> Workload:
    return Workload(list(texts), labels, np.full(len(texts), 5, dtype=np.int64), "test")


# --------------------------------------------------------------------------------------------
# A server that speaks kserve / openai / classify / hf


def _arg(text: str, word: str) -> str | None:
    parts = text.split()
    return parts[1] if len(parts) == 2 and parts[0] == word else None


def _vector(text: str) -> list:
    if _arg(text, "multi"):
        return [_vector(f"{text} {i}") for i in range(int(_arg(text, "multi")))]
    dim = int(_arg(text, "dim") or DIM)
    v = np.random.default_rng(zlib.crc32(text.encode())).normal(size=dim)
    v = v / np.linalg.norm(v) * float(_arg(text, "scale") or 1.0)
    if text == "nan":
        v[0] = math.nan
    return v.tolist()


def _label(text: str) -> str:
    return _arg(text, "label") or LABELS[zlib.crc32(text.encode()) % len(LABELS)]


def _probs(label: str) -> list:
    i = LABELS.index(label) if label in LABELS else 0
    return [0.8 if j == i else 0.1 for j in range(len(LABELS))]


class Server(FakeApp):
    """An aiohttp app on its own loop in a thread; counts requests and peak concurrency."""

    def __init__(self) -> None:
        self.hits = 0
        self.inflight = 0
        self.max_inflight = 0
        super().__init__(
            ("/v2/models/{model}/infer", self.kserve),
            ("/v1/embeddings", self.openai),
            ("/classify", self.classify),
            ("/hf/{task}", self.hf),
        )

    def reset(self) -> None:
        self.hits = self.max_inflight = 0

    async def _common(self, request, texts: list[str]):
        """Status / sleep / close behaviour; returns a Response to send instead, or None."""
        self.hits += 1
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await asyncio.sleep(max([float(_arg(t, "sleep") or 0.002) for t in texts]))
        finally:
            self.inflight -= 1
        if "close" in texts:
            request.transport.close()
            return web.Response(status=500)
        for t in texts:
            if _arg(t, "status"):
                return web.json_response({"error": t}, status=int(_arg(t, "status")))
        return None

    @staticmethod
    def _outputs(texts: list[str]) -> list[str]:
        return texts[:-1] if "short" in texts else texts

    async def kserve(self, request):
        body = await request.json()
        texts = body["inputs"][0]["data"]
        if (early := await self._common(request, texts)) is not None:
            return early
        texts = self._outputs(texts)
        if request.match_info["model"] == "cls":
            labels = [_label(t) for t in texts]
            outs = [
                {
                    "name": "probabilities",
                    "shape": [len(texts), len(LABELS)],
                    "datatype": "FP32",
                    "data": [p for lab in labels for p in _probs(lab)],
                },
                {"name": "labels", "shape": [len(texts)], "datatype": "BYTES", "data": labels},
            ]
        else:
            vecs = np.asarray([_vector(t) for t in texts])
            outs = [
                {
                    "name": "embeddings",
                    "shape": list(vecs.shape),
                    "datatype": "FP32",
                    "data": vecs.ravel().tolist(),
                }
            ]
        return web.json_response({"model_name": request.match_info["model"], "outputs": outs})

    async def openai(self, request):
        texts = (await request.json())["input"]
        if (early := await self._common(request, texts)) is not None:
            return early
        data = [{"index": i, "embedding": _vector(t)} for i, t in enumerate(self._outputs(texts))]
        return web.json_response({"data": data[::-1]})  # out of order on purpose

    @staticmethod
    def _scored(text: str) -> list:
        label = _label(text)
        names = LABELS if label in LABELS else (label, *LABELS[1:])
        return [{"label": n, "score": s} for n, s in zip(names, _probs(label), strict=True)]

    async def classify(self, request):
        texts = (await request.json())["input"]
        if (early := await self._common(request, texts)) is not None:
            return early
        return web.json_response({"data": [self._scored(t) for t in self._outputs(texts)]})

    async def hf(self, request):
        texts = (await request.json())["inputs"]
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "Authorization header is invalid"}, status=401)
        if (early := await self._common(request, texts)) is not None:
            return early
        texts = self._outputs(texts)
        if request.match_info["task"] == "cls":
            return web.json_response([self._scored(t) for t in texts])
        return web.json_response([_vector(t) for t in texts])


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


def emb(server, **kw) -> Target:
    kw = {"protocol": "kserve", "model": "emb", "dim": DIM, "normalized": True, **kw}
    return Target(server.url, **kw)


def cls(server, **kw) -> Target:
    kw = {"protocol": "classify", "task": "classification", "labels": LABELS, **kw}
    return Target(server.url, **kw)


# --------------------------------------------------------------------------------------------
# Closed loop


def test_shared_iterations_do_exactly_n_requests_over_v_users(server):
    server.reset()
    res = run_closed_loop(
        emb(server), workload(["a", "b", "c"]), vus=4, iterations=40, warmup_requests=0
    )
    assert server.hits == 40 and server.max_inflight <= 4
    assert res.total_requests == res.successful_requests == 40
    assert res.failed_requests == res.dropped == res.unstarted == 0
    assert res.invalid_embeddings == 0 and res.late_requests == 0
    assert res.min_num_vectors == res.max_num_vectors == 1
    assert res.latency.count == 40 and res.latency.p50 >= 2.0  # the server sleeps 2 ms
    assert res.client_cpu_percent is not None and res.client_cpu_percent >= 0


def test_max_duration_stops_the_run_and_counts_in_flight_as_dropped(server):
    res = run_closed_loop(
        emb(server),
        workload(["sleep 0.2"]),
        vus=2,
        iterations=1000,
        max_duration_s=0.5,
        warmup_requests=0,
    )
    assert res.dropped == 2  # both VUs were waiting on a reply at the deadline
    assert res.unstarted > 0 and res.failed_requests == 0  # stopped, not failed
    assert res.unstarted == 1000 - res.total_requests - res.dropped


# --------------------------------------------------------------------------------------------
# Open loop


def test_open_loop_sends_rate_times_duration_and_throughput_counts_inputs(server):
    texts = workload([f"t{i}" for i in range(16)])
    one = run_open_loop(emb(server), texts, rate=150, duration_s=1.0, inputs_per_request=1)
    four = run_open_loop(emb(server), texts, rate=150, duration_s=1.0, inputs_per_request=4)
    assert 100 <= one.total_requests <= 200
    assert four.total_requests == one.total_requests  # same seed, same schedule
    assert one.successful_requests == one.total_requests and one.unstarted == 0
    assert one.target_rate == 150 and one.mode == "open"
    # latency from the scheduled time can only be >= latency from the actual send
    assert one.latency.p50 >= one.send_latency.p50
    # throughput counts inputs: four per request is four times the request rate of the same run
    assert four.successful_requests == four.total_requests
    assert one.throughput.avg == pytest.approx(one.requests_per_sec)
    assert four.throughput.avg == pytest.approx(4 * four.requests_per_sec)


def test_open_loop_at_the_concurrency_cap_sends_late_and_measures_from_schedule(server, caplog):
    with caplog.at_level(logging.WARNING, logger="loadgen"):
        res = run_open_loop(
            emb(server),
            workload(["sleep 0.05"]),
            rate=60,
            duration_s=0.6,
            max_concurrency=2,
            warmup_requests=0,
        )
    assert res.late_requests > 0 and res.max_late_ms > 0
    assert res.latency.p90 > res.send_latency.p90  # measured from the schedule, not the send
    assert res.successful_requests == res.total_requests
    assert "after their scheduled time" in caplog.text


# --------------------------------------------------------------------------------------------
# Failures, counted separately


def test_4xx_429_5xx_are_counted_separately(server):
    texts = workload(["ok", "status 404", "status 429", "status 503", "ok 2"])
    res = run_closed_loop(emb(server), texts, vus=2, iterations=10, warmup_requests=0)
    assert (res.http_4xx, res.http_429, res.http_5xx) == (2, 2, 2)
    assert res.successful_requests == 4 and res.failed_requests == 6 and res.total_requests == 10
    assert res.timeouts == res.connection_errors == res.invalid_responses == 0
    assert "HTTP 404" in res.errors["http_4xx"]
    assert res.latency.count == 4  # latency over successful requests only


def test_timeouts_and_dropped_connections_are_counted_separately(server):
    slow = run_closed_loop(
        emb(server, timeout_s=0.2), workload(["sleep 1"]), 2, 2, warmup_requests=0
    )
    assert slow.timeouts == 2 and slow.connection_errors == 0 and slow.successful_requests == 0
    cut = run_closed_loop(emb(server), workload(["ok", "close"]), 1, 4, warmup_requests=0)
    assert cut.connection_errors == 2 and cut.successful_requests == 2 and cut.timeouts == 0


def test_connection_refused_is_counted_when_the_preflight_is_off():
    target = Target(f"http://127.0.0.1:{free_port()}", protocol="openai")
    res = run_closed_loop(target, workload(["x"]), 1, 3, warmup_requests=0, check_reachable=False)
    assert res.connection_errors == 3 and res.failed_requests == 3 and res.successful_requests == 0


def test_unreachable_server_is_one_clear_line():
    url = f"http://127.0.0.1:{free_port()}"
    for run in (
        lambda t: run_closed_loop(t, workload(["x"]), 1, 1),
        lambda t: run_open_loop(t, workload(["x"]), 10, 0.1),
    ):
        with pytest.raises(TargetUnreachable) as e:
            run(Target(url, protocol="openai"))
        msg = str(e.value)
        assert msg == f"cannot reach {url} (connection refused); start the server or fix --url"
        assert isinstance(e.value, BillionbenchError) and isinstance(e.value, ConnectionError)


def test_a_target_that_refuses_every_warmup_request_is_an_error(server):
    with pytest.raises(TargetError, match="HTTP 404"):
        run_closed_loop(emb(server), workload(["status 404"]), 2, 10)


# --------------------------------------------------------------------------------------------
# Output checks


def test_a_200_with_nan_is_invalid_not_successful(server):
    res = run_closed_loop(emb(server), workload(["ok", "nan"]), 1, 4, warmup_requests=0)
    assert res.successful_requests == 2 and res.invalid_responses == 2
    assert res.invalid_embeddings == 2 and res.failed_requests == 2
    assert "NaN" in res.errors["invalid"]


@pytest.mark.parametrize(
    "make_target, text, reason",
    [
        (emb, "dim 5", "dimension 5 != expected 8"),
        (emb, "scale 2", "norm off"),
        (emb, "short", "outputs for"),
        (cls, "label bogus", "unknown label 'bogus'"),
        (lambda s: cls(s, protocol="kserve", model="cls"), "label bogus", "unknown label"),
    ],
)
def test_wrong_dimension_norm_count_or_label_is_invalid(server, make_target, text, reason):
    res = run_closed_loop(make_target(server), workload([text]), 1, 2, warmup_requests=0)
    assert res.successful_requests == 0 and res.invalid_responses == 2
    assert reason in res.errors["invalid"]
    assert res.invalid_embeddings >= 2


def test_unnormalised_model_accepts_any_norm(server):
    res = run_closed_loop(emb(server, normalized=False), workload(["scale 2"]), 1, 2)
    assert res.successful_requests == 2


def test_accuracy_against_workload_labels(server):
    texts = ["label positive", "label neutral", "label negative", "label positive"]
    wl = workload(texts, labels=[0, 1, "negative", 1])  # ints index the label set
    for target in (cls(server), cls(server, protocol="kserve", model="cls")):
        res = run_closed_loop(target, wl, vus=2, iterations=4, inputs_per_request=2)
        assert res.accuracy == pytest.approx(0.75)
        assert res.avg_num_vectors is None and res.invalid_embeddings == 0


@pytest.mark.parametrize(
    "kw",
    [
        {"protocol": "openai", "dim": DIM, "normalized": True},
        {"protocol": "kserve", "model": "emb", "dim": DIM, "normalized": True},
        {"protocol": "hf", "dim": DIM, "normalized": True, "token_env": "BB_TEST_TOKEN"},
        {
            "protocol": "hf",
            "task": "classification",
            "labels": LABELS,
            "token_env": "BB_TEST_TOKEN",
        },
    ],
    ids=["openai", "kserve", "hf-embedding", "hf-classification"],
)
def test_every_protocol_round_trips(server, monkeypatch, kw):
    monkeypatch.setenv("BB_TEST_TOKEN", TOKEN)
    url = server.url + (
        "/hf/" + ("cls" if kw.get("task") else "emb") if kw["protocol"] == "hf" else ""
    )
    res = run_closed_loop(Target(url, **kw), workload(["a", "b", "c"]), 2, 6, inputs_per_request=3)
    assert res.successful_requests == 6 and res.failed_requests == 0
    assert res.throughput.avg > 0 and res.protocol == kw["protocol"]
    assert TOKEN not in repr(res) and TOKEN not in repr(Target(url, **kw))


def test_multi_vector_counts_are_recorded(server, monkeypatch):
    monkeypatch.setenv("BB_TEST_TOKEN", TOKEN)
    target = Target(server.url + "/hf/emb", protocol="hf", dim=DIM, token_env="BB_TEST_TOKEN")
    res = run_closed_loop(target, workload(["multi 2", "multi 5", "multi 3"]), 1, 3)
    assert (res.min_num_vectors, res.max_num_vectors) == (2, 5)
    assert res.avg_num_vectors == pytest.approx(10 / 3)


def test_bearer_token_missing_or_wrong(server, monkeypatch):
    target = Target(server.url + "/hf/emb", protocol="hf", token_env="BB_TEST_TOKEN")
    monkeypatch.delenv("BB_TEST_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="BB_TEST_TOKEN"):
        run_closed_loop(target, workload(["a"]), 1, 1)
    monkeypatch.setenv("BB_TEST_TOKEN", "wrong")
    with pytest.raises(TargetError, match="HTTP 401") as e:
        run_closed_loop(target, workload(["a"]), 1, 1)
    assert "wrong" not in str(e.value)


def test_target_validation_names_the_field():
    with pytest.raises(ConfigError, match="--protocol must be one of"):
        Target("http://127.0.0.1:1", protocol="grpc")
    with pytest.raises(ConfigError, match="does not serve classification"):
        Target("http://127.0.0.1:1", protocol="openai", task="classification")
    with pytest.raises(ConfigError, match="needs --model"):
        Target("http://127.0.0.1:1", protocol="kserve")
    with pytest.raises(ConfigError, match="http://"):
        Target("127.0.0.1:8000", protocol="openai")


def test_to_row_uses_only_result_columns(server):
    res = run_closed_loop(emb(server), workload(["a"]), 1, 4, inputs_per_request=2)
    row = res.to_row()
    assert set(row) <= set(COLUMNS)
    assert row["throughput_req_per_sec"] == res.throughput.avg  # inputs per second
    assert row["inputs_per_request"] == 2 and row["mode"] == "http" and row["vus"] == 1


# --------------------------------------------------------------------------------------------
# The generator's own ceiling


def test_ceiling_is_measured_and_a_run_near_it_warns(server, caplog):
    ceiling = measure_ceiling(duration_s=1.0, vus=8)
    assert ceiling > 0
    with caplog.at_level(logging.WARNING, logger="loadgen"):
        res = run_closed_loop(emb(server), workload(["a"]), 1, 5, ceiling_rps=ceiling * 1000)
        warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert not any("ceiling" in r.getMessage() for r in warned)
        res = run_closed_loop(emb(server), workload(["a"]), 1, 5, ceiling_rps=1.0)
    assert res.ceiling_rps == 1.0
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("of its own ceiling" in r.getMessage() for r in warned)


# --------------------------------------------------------------------------------------------
# k6


def test_k6_script_is_shared_iterations_with_the_same_request(server):
    target = cls(server, protocol="kserve", model="cls", token_env="BB_TEST_TOKEN")
    js = k6_script(target, workload(["x", 'quote " y']), vus=7, iterations=123, max_duration_s=60)
    assert "executor: 'shared-iterations'" in js
    assert "vus: 7," in js and "iterations: 123," in js and 'maxDuration: "60s"' in js
    assert f'const URL = "{server.url}/v2/models/cls/infer";' in js
    assert 'const TEXTS_AT = ["inputs", 0, "data"];' in js
    assert '["x", "quote \\" y"]' in js
    template = json.loads(js.split("const TEMPLATE = ")[1].split(";\n")[0])
    assert template["inputs"][0]["shape"] == [1] and template["inputs"][0]["datatype"] == "BYTES"
    assert "__ENV[TOKEN_ENV]" in js and TOKEN not in js
    assert "__" not in js.replace("__ENV", "")  # every placeholder filled


def test_k6_summary_parses_into_the_same_result():
    summary = {
        "metrics": {
            "bb_ok_requests": {"count": 90, "rate": 45.0},
            "bb_ok_inputs": {"count": 360, "rate": 180.0},
            "bb_http_5xx": {"count": 4, "rate": 2.0},
            "bb_http_429": {"count": 3, "rate": 1.5},
            "bb_timeouts": {"count": 1, "rate": 0.5},
            "bb_invalid_responses": {"count": 2, "rate": 1.0},
            "bb_invalid_outputs": {"count": 8, "rate": 4.0},
            "iterations": {"count": 100, "rate": 50.0},
            "bb_ok_latency": {
                "avg": 20.0,
                "min": 10.0,
                "med": 19.0,
                "max": 90.0,
                "p(90)": 30.0,
                "p(95)": 40.0,
                "p(99)": 80.0,
                "count": 90,
            },
        }
    }
    target = Target("http://127.0.0.1:1", protocol="openai")
    res = parse_k6_summary(summary, target=target, vus=4, iterations=100, inputs_per_request=4)
    assert res.generator == "k6" and res.test_duration_sec == pytest.approx(2.0)
    assert res.total_requests == 100 and res.successful_requests == 90
    assert (res.http_5xx, res.http_429, res.timeouts, res.invalid_responses) == (4, 3, 1, 2)
    assert res.failed_requests == 10 and res.invalid_embeddings == 8
    assert res.throughput.avg == pytest.approx(180.0)
    assert (res.latency.p50, res.latency.p95, res.latency.p99) == (19.0, 40.0, 80.0)
    assert set(res.to_row()) <= set(COLUMNS)


def test_run_k6_without_k6_says_so(monkeypatch, server):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(K6Missing, match="k6 is not on PATH"):
        run_k6(emb(server), workload(["a"]), 1, 1)


@pytest.mark.k6
def test_k6_runs_the_generated_script(server):
    res = run_k6(emb(server), workload(["a", "status 503"]), vus=2, iterations=20)
    assert res.total_requests == 20 and res.successful_requests == 10 and res.http_5xx == 10


_K6_STUBS = """
const __calls = [];
const __counters = {};
class Counter { constructor(n) { this.n = n; __counters[n] = 0; } add(v) { __counters[this.n] += v; } }
class Trend { constructor(n) { this.n = n; } add(v) {} }
class SharedArray { constructor(name, f) { return f(); } }
const exec = { scenario: { iterationInTest: 0 } };
const __ENV = { BB_TEST_TOKEN: 'tok' };
const http = {
  request(method, url, body, params) {
    __calls.push({ method, url, body: JSON.parse(body), headers: params.headers });
    const r = __RESPONSES[__calls.length - 1];
    return { status: r.status, error_code: r.error_code || 0, timings: { duration: 1 },
             json() { return typeof r.body === 'string' ? JSON.parse(r.body) : r.body; } };
  },
};
"""


def _run_generated_k6(js: str, responses: list[dict]) -> dict:
    import subprocess

    body = "\n".join(line for line in js.splitlines() if not line.startswith("import "))
    body = body.replace("export default function", "function __default").replace("export ", "")
    driver = (
        f"const __RESPONSES = {json.dumps(responses)};\n{_K6_STUBS}\n{body}\n"
        f"for (let i = 0; i < {len(responses)}; i++) "
        "{ exec.scenario.iterationInTest = i; __default(); }\n"
        "console.log(JSON.stringify({ calls: __calls, counters: __counters, options }));\n"
    )
    out = subprocess.run(
        ["node", "-e", driver], capture_output=True, text=True, timeout=30, check=True
    )
    return json.loads(out.stdout)


def _good(protocol: str, n: int) -> dict:
    if protocol == "kserve":
        return {"outputs": [{"name": "embeddings", "shape": [n, 2], "datatype": "FP32"}]}
    if protocol == "hf":
        return [[0.6, 0.8]] * n
    return {"data": [{}] * n}


@pytest.mark.node
@pytest.mark.parametrize("protocol", ["kserve", "openai", "classify", "hf"])
def test_generated_k6_script_runs_under_stubbed_k6_modules(protocol):
    """Without k6: the script's own JS builds the bodies and counts outcomes as documented."""
    kw = {"kserve": {"model": "m"}, "classify": {"task": "classification"}}.get(protocol, {})
    target = Target("http://h:1", protocol=protocol, token_env="BB_TEST_TOKEN", **kw)
    wl = workload(["t0", "t1", "t2", "t3", "t4"])
    js = k6_script(target, wl, vus=2, iterations=9, inputs_per_request=2)
    responses = [
        {"status": 200, "body": _good(protocol, 2)},
        {"status": 200, "body": _good(protocol, 1)},  # one output for two inputs
        {"status": 200, "body": "NaN,"},  # not JSON
        {"status": 503, "body": {}},
        {"status": 429, "body": {}},
        {"status": 404, "body": {}},
        {"status": 302, "body": {}},
        {"status": 0, "error_code": 1050},
        {"status": 0, "error_code": 1212},
    ]
    out = _run_generated_k6(js, responses)
    c = out["counters"]
    assert (c["bb_ok_requests"], c["bb_ok_inputs"]) == (1, 2)
    assert (c["bb_invalid_responses"], c["bb_invalid_outputs"]) == (2, 4)
    assert (c["bb_http_5xx"], c["bb_http_429"], c["bb_http_4xx"], c["bb_http_other"]) == (
        1,
        1,
        1,
        1,
    )
    assert (c["bb_timeouts"], c["bb_connection_errors"]) == (1, 1)
    scenario = out["options"]["scenarios"]["shared_load_test"]
    assert scenario == {
        "executor": "shared-iterations",
        "vus": 2,
        "iterations": 9,
        "maxDuration": "60s",
    }
    adapter_req = {
        "kserve": lambda t: {
            "inputs": [{"name": "TEXT", "shape": [2], "datatype": "BYTES", "data": t}]
        },
        "openai": lambda t: {"input": t, "model": ""},
        "classify": lambda t: {"input": t, "model": ""},
        "hf": lambda t: {"inputs": t},
    }[protocol]
    for i, call in enumerate(out["calls"]):
        assert call["body"] == adapter_req(wl.batch(i, 2)[0])  # same round-robin batches
        assert call["headers"]["Authorization"] == "Bearer tok"
    assert (
        out["calls"][0]["url"]
        == "http://h:1"
        + {
            "kserve": "/v2/models/m/infer",
            "openai": "/v1/embeddings",
            "classify": "/classify",
            "hf": "",
        }[protocol]
    )


# --------------------------------------------------------------------------------------------
# Several load generators: merged from raw samples


def _samples(latencies_ms: list[float], t0_ns: int = 10**18) -> Samples:
    n = len(latencies_ms)
    start = t0_ns + np.arange(n, dtype=np.int64) * 1_000_000
    end = start + (np.asarray(latencies_ms) * 1e6).astype(np.int64)
    ones, zeros = np.ones(n, np.int64), np.zeros(n, np.int64)
    kind = np.asarray(["ok"] * n)
    return Samples(start, start, end, ones, kind, zeros, zeros, zeros, ones, {})


def _result(samples: Samples, vus: int) -> LoadResult:
    res = _summarise(
        samples,
        protocol="kserve",
        task="embedding",
        inputs_per_request=1,
        mode="closed",
        wall_s=1.0,
        cpu_percent=10.0,
        dropped=0,
        unstarted=0,
        late_threshold_ms=math.inf,
        vus=vus,
        iterations=len(samples.kind),
    )
    res.ceiling_rps = 1000.0
    return res


def test_merged_percentiles_come_from_every_request_not_averaged_percentiles():
    fast, slow = _result(_samples([10.0] * 100), 2), _result(_samples([30.0] * 100), 3)
    merged = merge_results([fast, slow])
    assert (fast.latency.p99, slow.latency.p99) == (10.0, 30.0)
    assert merged.latency.p99 == pytest.approx(30.0)  # the average of the p99s would say 20
    assert merged.latency.p50 == pytest.approx(20.0)  # halfway between the two halves
    assert merged.latency.count == merged.total_requests == merged.successful_requests == 200
    assert (merged.vus, merged.iterations, merged.client_cpu_percent) == (5, 200, 20.0)
    assert merged.ceiling_rps == 2000.0


def test_merging_two_real_runs_equals_one_run_over_their_union(server):
    server.reset()
    a = run_closed_loop(emb(server), workload(["a"]), vus=2, iterations=20, warmup_requests=0)
    b = run_closed_loop(emb(server), workload(["b"]), vus=1, iterations=10, warmup_requests=0)
    merged = merge_results([a, b])
    durations = np.concatenate([(r.samples.end - r.samples.start) / 1e6 for r in (a, b)])
    assert merged.latency.p99 == pytest.approx(float(np.percentile(durations, 99)))
    assert merged.total_requests == server.hits == 30 and merged.vus == 3
    # the two runs ran one after the other: the window spans both, so throughput counts both
    window = (max(a.samples.end.max(), b.samples.end.max()) - a.samples.start.min()) / 1e9
    assert merged.throughput.window_s == pytest.approx(window)


def test_load_shares_split_evenly_and_workers_with_none_sit_out():
    from harness.executors.distributed_load import shares

    assert shares(32, 3) == [11, 11, 10] and sum(shares(7, 4)) == 7
    assert shares(1, 3) == [1, 0, 0]
