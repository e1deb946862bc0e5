"""The server against hostile or clumsy clients: every bad request a 4xx, no client can stall it."""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import socket
import threading
import time

import pytest
from test_server import Running, get, post

from serving.server import ServerLimits

MODEL = "bge-base-tiny"
INFER = f"/v2/models/{MODEL}/infer"


@pytest.fixture(scope="module")
def embedder():
    with Running(MODEL) as s:
        yield s


def request(url, method, path, body=b"", headers=None, timeout=10):
    """(status, body) over a fresh connection; sends the path verbatim (`*`, host:port)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        headers = {"Content-Length": str(len(body)), **(headers or {})}
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders(body or None)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def kserve(inp: dict, **extra) -> bytes:
    return json.dumps({"inputs": [inp], **extra}).encode()


TEXT = {"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["hello"]}

# (method, path, body, headers): each one got a 500 from the server before
BAD = [
    ("POST", INFER, kserve({**TEXT, "parameters": "x"}), {}),
    ("POST", "/v1/embeddings", b'{"input": ["abc \\ud800"]}', {}),
    ("POST", "/v1/embeddings", b"[" * 100_000, {}),
    ("POST", INFER, b"[" * 100_000, {}),
    ("POST", "/v1/embeddings", b'{"input": ["x"]}', {"Content-Encoding": "gzip"}),
    ("OPTIONS", "*", b"", {}),
    ("CONNECT", "example.com:443", b"", {}),
    ("POST", INFER, kserve({**TEXT, "parameters": {"binary_data_size": float("nan")}}), {}),
    ("POST", INFER, kserve({**TEXT, "parameters": {"binary_data_size": "12"}}), {}),
    ("POST", INFER, kserve({**TEXT, "parameters": {"binary_data_size": [3]}}), {}),
    ("POST", INFER, kserve({**TEXT, "name": ["TEXT"]}), {}),
    ("POST", INFER, kserve({**TEXT, "shape": [True]}), {}),
    ("POST", INFER, kserve({**TEXT, "data": [None]}), {}),
    ("POST", INFER, kserve({**TEXT, "data": [float("nan")]}), {}),
    ("POST", INFER, kserve({**TEXT, "data": [{"a": 1}]}), {}),
    ("POST", INFER, kserve({**TEXT, "data": [[[[["x"]]]]] * 40}), {}),
    ("POST", INFER, kserve(TEXT, outputs="x"), {}),
    ("POST", INFER, kserve(TEXT, id=["x"]), {}),
    ("POST", INFER, kserve(TEXT), {"Inference-Header-Content-Length": "abc"}),
]


def binary_fp32_of_3_bytes() -> tuple[bytes, dict]:
    head = kserve(
        {"name": "TEXT", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 3}}
    )
    return head + b"\x00\x01\x02", {"Inference-Header-Content-Length": str(len(head))}


def test_every_reported_bad_request_is_a_one_line_4xx_and_logs_no_error(embedder, caplog):
    body, headers = binary_fp32_of_3_bytes()
    cases = [*BAD, ("POST", INFER, body, headers)]
    with caplog.at_level(logging.WARNING):
        for method, path, raw, hdrs in cases:
            status, out = request(embedder.url, method, path, raw, hdrs)
            assert 400 <= status < 500, (method, path, raw[:80], status, out[:300])
            if out:
                reason = json.loads(out)["error"]
                assert reason and "\n" not in reason
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert post(embedder.url, "/v1/embeddings", {"input": ["still alive"]})[0] == 200


def test_kserve_bytes_elements_must_be_strings_like_the_openai_route(embedder):
    for bad in (None, float("nan"), 1.5, True, {"a": 1}):
        status, body, _ = post(embedder.url, INFER, raw=kserve({**TEXT, "data": [bad]}))
        assert status == 400, (bad, body)
        status, body, _ = post(embedder.url, "/v1/embeddings", {"input": [bad]})
        assert status == 400, (bad, body)


def test_gzip_bodies_are_read_when_they_are_gzip(embedder):
    raw = gzip.compress(json.dumps({"input": ["zipped"]}).encode())
    status, out = request(
        embedder.url,
        "POST",
        "/v1/embeddings",
        raw,
        {"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert status == 200 and len(json.loads(out)["data"]) == 1


def test_an_unexpected_error_is_a_500_with_an_id_and_one_log_line(embedder, caplog, monkeypatch):
    def boom(pred):
        raise RuntimeError("a bug\nwith two lines")

    monkeypatch.setattr(embedder.server.codec, "embeddings", boom)
    with caplog.at_level(logging.INFO, logger="serving.server"):
        status, body, _ = post(embedder.url, "/v1/embeddings", {"input": ["x"]})
    assert status == 500
    reason = json.loads(body)["error"]
    assert "error id" in reason and "a bug" not in reason
    errors = [r for r in caplog.records if r.name == "serving.server"]
    assert len(errors) == 1 and errors[0].exc_info is None
    error_id = reason.split("error id ")[1].rstrip(")")
    assert error_id in errors[0].getMessage() and "\n" not in errors[0].getMessage()


def test_the_429_reason_says_queue_full_once():
    from concurrent.futures import ThreadPoolExecutor

    with Running(MODEL, latency_ms=200.0, max_queue_inputs=2, max_batch_size=1) as s:
        with ThreadPoolExecutor(12) as pool:
            results = list(
                pool.map(
                    lambda i: post(s.url, "/v1/embeddings", {"input": ["a", "b"]}, timeout=30),
                    range(12),
                )
            )
    reasons = [json.loads(b)["error"] for code, b, _ in results if code == 429]
    assert reasons and all(r.startswith("queue full: ") for r in reasons)
    assert all(r.count("queue full") == 1 for r in reasons)


def test_metrics_label_by_route_template_and_cannot_be_injected(embedder):
    status, _ = request(embedder.url, "GET", "/x%22y%7D%20injected_metric%201%0A")
    assert status == 404
    for i in range(50):
        assert request(embedder.url, "GET", f"/miss/{i}")[0] == 404
    post(embedder.url, INFER, raw=kserve(TEXT))
    text = get(embedder.url, "/metrics")[1].decode()
    lines = text.splitlines()
    assert not [x for x in lines if "injected_metric" in x]
    routes = {
        x.split('route="')[1].split('"')[0] for x in lines if x.startswith("bb_requests_total{")
    }
    assert "unknown" in routes and "/v2/models/{name}/infer" in routes
    assert all(r == "unknown" or r.startswith("/") and "miss" not in r for r in routes)
    for name in ("bb_useful_tokens_total ", "bb_padded_tokens_total ", "bb_queue_depth "):
        assert any(x.startswith(name) and float(x.split()[1]) >= 0 for x in lines), name


def test_long_texts_are_counted_in_characters_first_and_tokenized_off_the_event_loop():
    limits = ServerLimits(max_body_bytes=16 * 2**20, max_text_chars=40_000)
    with Running(MODEL, limits=limits) as s:
        tokenizer = s.engine.pipeline.tokenizer
        threads = []

        class Spy:
            def __getattr__(self, name):
                return getattr(tokenizer, name)

            def __call__(self, *a, **k):
                threads.append(threading.current_thread())
                return tokenizer(*a, **k)

        s.engine.pipeline.tokenizer = Spy()
        try:
            # one input over the character cap: 413 before a single text is tokenized
            texts = ["word " * 6000] * 3 + ["x" * 40_001]
            status, body, _ = post(s.url, "/v1/embeddings", {"input": texts})
            assert status == 413 and "characters" in json.loads(body)["error"]
            assert threads == []
            # the hostile body of the report: 256 texts of 30,000 characters, 413 on tokens
            texts = [("word " * 6000)[:30_000]] * 256
            status, body, _ = post(s.url, "/v1/embeddings", {"input": texts}, timeout=60)
            assert status == 413 and "tokens" in json.loads(body)["error"]
            assert threads and s._thread not in threads
        finally:
            s.engine.pipeline.tokenizer = tokenizer
        assert get(s.url, "/v2/health/ready")[0] == 200


def _send_and_leave(url: str, path: str, body: bytes, wait_s: float) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        time.sleep(wait_s)


def test_inputs_of_clients_that_left_are_not_computed(caplog):
    # forward passes of one input, 300 ms each: 20 clients that give up after 0.2 s
    with Running(MODEL, latency_ms=300.0, max_batch_size=1) as s:
        body = json.dumps({"input": ["abandoned"]}).encode()
        with caplog.at_level(logging.WARNING):
            clients = [
                threading.Thread(target=_send_and_leave, args=(s.url, "/v1/embeddings", body, 0.2))
                for _ in range(20)
            ]
            for c in clients:
                c.start()
            for c in clients:
                c.join()
            for _ in range(100):
                stats = s.batcher.stats()
                if stats.pending_requests == 0 and stats.queue_depth == 0:
                    break
                time.sleep(0.1)
        assert stats.pending_requests == 0 and stats.queue_depth == 0
        assert stats.inputs < 10, stats  # all 20 would be computed if the queue kept them
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert post(s.url, "/v1/embeddings", {"input": ["after"]})[0] == 200


def test_a_slow_body_is_answered_408_and_a_vanished_one_quietly(caplog):
    with Running(MODEL, limits=ServerLimits(max_body_bytes=2**20, body_timeout_s=0.5)) as s:
        host, port = s.url.removeprefix("http://").split(":")
        head = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        with caplog.at_level(logging.WARNING):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(head + b'{"input"')
                answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408")
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(head + b'{"input"')  # and leave mid-body
            time.sleep(0.3)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert post(s.url, "/v1/embeddings", {"input": ["after"]})[0] == 200


def test_connections_beyond_the_cap_are_refused_with_503():
    with Running(MODEL, limits=ServerLimits(max_body_bytes=2**20, max_connections=4)) as s:
        host, port = s.url.removeprefix("http://").split(":")
        held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(4)]
        try:
            time.sleep(0.2)
            with socket.create_connection((host, int(port)), timeout=10) as extra:
                answer = extra.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503") and b"too many open connections" in answer
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.2)
        assert post(s.url, "/v1/embeddings", {"input": ["after"]})[0] == 200


def test_serve_with_an_impossible_port_is_one_line_and_exit_2(capsys):
    from harness.serve import main

    code = main(["--engine", "fake", "--model", MODEL, "--task", "embedding", "--port", "99999"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "99999" in err


def test_a_declared_body_over_the_limit_is_answered_413_at_once():
    with Running(MODEL, limits=ServerLimits(max_body_bytes=2**20, body_timeout_s=30.0)) as s:
        host, port = s.url.removeprefix("http://").split(":")
        head = (
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )
        # the socket gives up after 10 s, well before the 30 s body timeout would answer
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(head + b'{"input":[')  # 10 bytes of the 10 GB it declared
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413") and b"over 1048576 bytes" in answer
        assert post(s.url, "/v1/embeddings", {"input": ["after"]})[0] == 200
