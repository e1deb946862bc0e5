"""Probe a running `harness.serve` as a hostile or clumsy client would; print what it answered.

    python scripts/probe_server.py --url http://127.0.0.1:8000 --model bge-base-tiny malformed
    python scripts/probe_server.py --url http://127.0.0.1:8000 --model bge-base-tiny stall

`malformed` sends a fixed catalogue of bad requests and --random seeded mutations of good ones,
and counts the answers: 4xx, 5xx, hang (no answer within --timeout), other. `stall` has one
client send a 7 MB body of 256 texts of 30,000 characters, over and over, while another polls
/v2/health/ready; it prints the health latency (p50, max) alone and during the attack.
Standard library only, so it can probe any version of the server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

WEIRD = [
    None,
    float("nan"),
    float("inf"),
    "x",
    "",
    "abc \ud800",
    [],
    {},
    [True],
    [None],
    [[["x"]]],
    -1,
    2**64,
    1.5,
    True,
    {"a": 1},
    ["x", 1],
    "1" * 40,
]


def send(base, method, path, body=b"", headers=None, timeout=10.0):
    """The status, or 'hang' when no answer came within `timeout`, or 'closed'."""
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
            conn.putheader(k, v)
        conn.endheaders(body or None)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except TimeoutError:
        return "hang"
    except (ConnectionError, http.client.HTTPException):
        return "closed"
    finally:
        conn.close()


def dumps(v) -> bytes:
    return json.dumps(v).encode()


def catalogue(model: str) -> list[tuple[str, str, bytes, dict]]:
    """The bad requests a probe of the server reported, and their neighbours."""
    infer = f"/v2/models/{model}/infer"
    text = {"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["hello"]}
    fp32_head = dumps(
        {
            "inputs": [
                {"name": "TEXT", "shape": [1], "datatype": "FP32"}
                | {"parameters": {"binary_data_size": 3}}
            ]
        }
    )
    out = [
        ("POST", infer, dumps({"inputs": [text | {"parameters": "x"}]}), {}),
        ("POST", "/v1/embeddings", b'{"input": ["abc \\ud800"]}', {}),
        ("POST", "/v1/embeddings", b"[" * 100_000, {}),
        ("POST", infer, b"[" * 100_000, {}),
        ("POST", "/v1/embeddings", dumps({"input": ["x"]}), {"Content-Encoding": "gzip"}),
        ("OPTIONS", "*", b"", {}),
        ("CONNECT", "example.com:443", b"", {}),
        (
            "POST",
            infer,
            fp32_head + b"\0\1\2",
            {"Inference-Header-Content-Length": str(len(fp32_head))},
        ),
        ("POST", infer, dumps({"inputs": [text]}), {"Inference-Header-Content-Length": "x"}),
    ]
    for v in WEIRD:
        for field in ("name", "shape", "datatype", "data", "parameters"):
            out.append(("POST", infer, dumps({"inputs": [text | {field: v}]}), {}))
        out.append(
            ("POST", infer, dumps({"inputs": [text | {"parameters": {"binary_data_size": v}}]}), {})
        )
        out.append(("POST", infer, dumps({"inputs": [text | {"data": [v]}]}), {}))
        out.append(("POST", "/v1/embeddings", dumps({"input": v}), {}))
        out.append(("POST", "/v1/embeddings", dumps({"input": [v]}), {}))
        out.append(("POST", "/classify", dumps({"input": [v]}), {}))
    return out


def mutated(model: str, rng: random.Random) -> tuple[str, str, bytes, dict]:
    """A good request with one to three things broken at random."""
    infer = f"/v2/models/{model}/infer"
    if rng.random() < 0.5:
        path = infer
        body = {"inputs": [{"name": "TEXT", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}
        spots = [(body["inputs"][0], k) for k in ("name", "shape", "datatype", "data")]
        spots += [(body, "inputs"), (body, "outputs"), (body, "id"), (body, "parameters")]
    else:
        path = rng.choice(["/v1/embeddings", "/classify", "/embeddings_image"])
        body = {"input": ["a", "b"], "model": model}
        spots = [(body, "input"), (body, "model"), (body, "modality")]
    for _ in range(rng.randint(1, 3)):
        where, key = rng.choice(spots)
        where[key] = rng.choice(WEIRD)
    raw = dumps(body)
    headers = {}
    roll = rng.random()
    if roll < 0.1:
        raw = raw[: rng.randint(0, len(raw))]
    elif roll < 0.2:
        headers["Content-Encoding"] = rng.choice(["gzip", "deflate", "br", "zz"])
    elif roll < 0.3:
        headers["Inference-Header-Content-Length"] = str(rng.randint(-5, len(raw) + 5))
    method = "POST" if rng.random() < 0.9 else rng.choice(["GET", "PUT", "DELETE", "OPTIONS"])
    return method, path, raw, headers


def malformed(args) -> dict:
    rng = random.Random(args.seed)
    cases = catalogue(args.model) + [mutated(args.model, rng) for _ in range(args.random)]
    counts: Counter[str] = Counter()
    fives = []
    for method, path, body, headers in cases:
        status = send(args.url, method, path, body, headers, args.timeout)
        kind = status if isinstance(status, str) else f"{status // 100}xx"
        counts[kind] += 1
        if kind == "5xx" and len(fives) < 10:
            fives.append(f"{method} {path} {body[:80]!r} {headers} -> {status}")
    alive = send(args.url, "GET", "/v2/health/ready", timeout=args.timeout)
    return {"tried": len(cases), "answers": dict(counts), "first_5xx": fives, "ready_after": alive}


def poll_health(url: str, seconds: float) -> list[float]:
    lat, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        send(url, "GET", "/v2/health/ready", timeout=30)
        lat.append((time.perf_counter() - t0) * 1e3)
        time.sleep(0.01)
    return lat


def summary(ms: list[float]) -> dict:
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 1), "max_ms": round(max(ms), 1)}


def stall(args) -> dict:
    words = ("word " * 6000)[:30_000]
    body = dumps({"input": [words] * 256, "model": args.model})
    quiet = poll_health(args.url, args.seconds)
    stop, answers = threading.Event(), []

    def hostile():
        while not stop.is_set():
            answers.append(send(args.url, "POST", "/v1/embeddings", body, {}, 60))

    t = threading.Thread(target=hostile, daemon=True)
    t.start()
    time.sleep(0.2)  # let the first body arrive
    attacked = poll_health(args.url, args.seconds)
    stop.set()
    t.join(60)
    return {
        "body_mb": round(len(body) / 2**20, 2),
        "health_alone": summary(quiet),
        "health_under_attack": summary(attacked),
        "hostile_answers": dict(Counter(map(str, answers))),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="probe_server", description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model", default="bge-base-tiny", help="the model the server serves")
    p.add_argument("--random", type=int, default=400, help="random mutations to add (malformed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds before a hang")
    p.add_argument("--seconds", type=float, default=2.0, help="health polling time (stall)")
    p.add_argument("mode", choices=["malformed", "stall"])
    args = p.parse_args(argv)
    result = malformed(args) if args.mode == "malformed" else stall(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
