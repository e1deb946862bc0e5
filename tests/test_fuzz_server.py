"""Property-based fuzzing of the HTTP server: no generated request gets a 5xx or goes unanswered.

Each example is sent to two real servers on 127.0.0.1 (an embedder and a classifier, fake
engines), so the 300 examples make 600 requests across every route.
"""

from __future__ import annotations

import gzip
import http.client
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server import Running

EXAMPLES = 300
SENT: list[int] = []

ROUTES = [
    "/v2/health/ready",
    "/v2/health/live",
    "/v2",
    "/v2/models/{model}",
    "/v2/models/{model}/ready",
    "/v2/models/{model}/infer",
    "/v2/models/{model}/versions/1",
    "/v2/models/{model}/versions/1/infer",
    "/v2/models/other/infer",
    "/v1/embeddings",
    "/embeddings",
    "/embeddings_image",
    "/classify",
    "/metrics",
]
INFER_HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def servers():
    with (
        Running("bge-base-tiny", latency_ms=0.5) as embedder,
        Running("distilbert-sentiment-tiny", latency_ms=0.5) as classifier,
    ):
        yield [embedder, classifier]


# any text, lone surrogates included (they travel as \ud800 escapes in JSON)
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    any_text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)
    ),
    max_leaves=12,
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
texts = st.lists(st.text(max_size=30), min_size=0, max_size=6)
maybe = lambda s: st.one_of(s, json_values)  # noqa: E731 - a well-formed value or anything


@st.composite
def kserve_bodies(draw):
    data = draw(maybe(texts))
    tensor = {
        "name": draw(maybe(st.sampled_from(["TEXT", "IMAGE", "IDS"]))),
        "shape": draw(maybe(st.just([len(data)] if isinstance(data, list) else [1]))),
        "datatype": draw(maybe(st.sampled_from(["BYTES", "FP32", "INT64", "BF16"]))),
    }
    if draw(st.booleans()):
        tensor["data"] = data
    if draw(st.booleans()):
        tensor["parameters"] = draw(
            maybe(st.fixed_dictionaries({"binary_data_size": maybe(st.integers(0, 64))}))
        )
    body = {"inputs": draw(maybe(st.just([tensor])))}
    if draw(st.booleans()):
        body["outputs"] = draw(
            maybe(st.just([{"name": "EMBEDDINGS", "parameters": {"binary_data": True}}]))
        )
    if draw(st.booleans()):
        body["id"] = draw(json_values)
    head = json.dumps(body).encode()
    headers = {}
    if draw(st.booleans()):
        # Triton's binary extension: the JSON header, then raw tensor bytes
        headers[INFER_HEADER] = draw(
            st.one_of(st.just(str(len(head))), st.integers(-5, 500).map(str), header_text)
        )
        head += draw(st.binary(max_size=64))
    return head, headers


@st.composite
def openai_bodies(draw):
    body = {"input": draw(maybe(texts)), "model": draw(maybe(st.just("m")))}
    if draw(st.booleans()):
        body["modality"] = draw(maybe(st.sampled_from(["text", "image"])))
    return json.dumps(body).encode(), {}


raw_bodies = st.one_of(
    st.binary(max_size=200).map(lambda b: (b, {})),
    json_values.map(lambda v: (json.dumps(v).encode(), {})),
    st.integers(1, 3000).map(lambda n: (b"[" * n, {})),
)


@st.composite
def requests(draw):
    method = draw(
        st.sampled_from(["POST"] * 6 + ["GET"] * 3 + ["PUT", "DELETE", "OPTIONS", "HEAD"])
    )
    path = draw(
        st.one_of(
            st.sampled_from(ROUTES),
            st.text("abcxyz/%{}\"'0123456789.?&=", max_size=30).map(lambda p: "/" + p),
        )
    )
    body, headers = draw(st.one_of(kserve_bodies(), openai_bodies(), raw_bodies))
    if draw(st.booleans()):
        headers["Content-Type"] = draw(
            st.sampled_from(["application/json", "application/octet-stream", "text/plain", "x"])
        )
    encoding = draw(st.sampled_from([None, None, None, "gzip", "gzip-real", "deflate", "br"]))
    if encoding == "gzip-real":
        body, encoding = gzip.compress(body), "gzip"
    if encoding:
        headers["Content-Encoding"] = encoding
    return method, path, body, headers


def send(url: str, method: str, path: str, body: bytes, headers: dict) -> int:
    host, port = url.removeprefix("http://").split(":")
    # generous: a loaded CI machine is slow, but a hang still fails
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            conn.putheader(k, v)
        conn.endheaders(body or None)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(req=requests())
def test_no_generated_request_gets_a_5xx_or_hangs(servers, req):
    method, path, body, headers = req
    for s in servers:
        p = path.replace("{model}", s.server.name)
        status = send(s.url, method, p, body, headers)  # a hang raises socket.timeout
        SENT.append(status)
        assert status < 500, (method, p, body[:200], headers, status)


def test_the_servers_still_answer_correctly_after_the_fuzzing(servers):
    from test_server import post

    assert len(SENT) >= 2 * EXAMPLES * 0.8  # hypothesis may stop early only on a tiny space

    for s in servers:
        route = "/classify" if s.server.codec.task == "classification" else "/v1/embeddings"
        status, body, _ = post(s.url, route, {"input": ["fine"]})
        assert status == 200 and len(json.loads(body)["data"]) == 1
