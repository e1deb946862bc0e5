"""HTTP load generation: k6-style closed loop (shared iterations) and Poisson open loop.

Both drive one `Target` (a URL plus a protocol adapter) with aiohttp, validate every response
(status, output count, dimension, NaN/Inf, norm, labels) and summarise with the same `Latency` and
`Throughput` types as the in-process benchmark. Throughput counts *inputs*: a request carrying 32
texts counts 32. The generator measures its own ceiling against a no-op server
(`measure_ceiling`) and warns when a run comes within 50% of it; `run_k6` produces the same
closed-loop scenario with a k6 binary when one is installed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from engines import contract
from engines.errors import BillionbenchError, ConfigError
from harness.measure import Latency, Throughput
from harness.workloads import Workload

log = logging.getLogger(__name__)

TASKS = ("embedding", "classification", "vision-embedding")
NORM_TOL = 1e-3
CEILING_FRACTION = 0.5
# failure kinds, each counted separately; "ok" and "invalid" are the outcomes of a 2xx
FAILURE_KINDS = (
    "http_4xx",
    "http_429",
    "http_5xx",
    "http_other",
    "timeouts",
    "connection_errors",
    "invalid_responses",
)
K6_INSTALL = "https://grafana.com/docs/k6/latest/set-up/install-k6/"


class TargetUnreachable(BillionbenchError, ConnectionError):
    """The server does not accept connections; the message names the URL and the cause."""


class TargetError(BillionbenchError):
    """The server answers, but every warm-up request was refused (wrong model, path or token)."""


class K6Missing(BillionbenchError):
    """No `k6` binary on PATH."""

    def __init__(self) -> None:
        super().__init__(
            f"k6 is not on PATH; install the k6 binary ({K6_INSTALL}) "
            "or use the built-in aiohttp load generator"
        )


# ---------------------------------------------------------------------------------------------
# Target and protocol adapters


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # appended to the target URL ("" posts to the URL itself)
    body: Any  # JSON-serialisable


@dataclass
class Parsed:
    """One entry per input: a vector, a (k, d) block of vectors, or label probabilities."""

    values: list[np.ndarray]
    labels: list[str] | None = None


class Protocol(ABC):
    """Builds a request from texts and parses a response; one small class per server API."""

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]] = TASKS
    needs_model: ClassVar[bool] = False
    checks_outputs: ClassVar[bool] = True
    count_js: ClassVar[str]  # JS expression: number of outputs in parsed body `b` (k6 scripts)

    def __init__(self, target: Target):
        self.target = target
        self._uris: dict[int, str] = {}

    def images(self, items: list) -> list[str]:
        """Images as base64 data URIs, encoded once per workload item (not per request)."""
        from engines.vision import data_uri

        out = []
        for x in items:
            if isinstance(x, str):
                out.append(x)
                continue
            key = id(x)
            uri = self._uris.get(key)
            if uri is None:
                uri = self._uris[key] = data_uri(x, _mime(x))
            out.append(uri)
        return out

    @abstractmethod
    def request(self, texts: list[str]) -> Request: ...

    @abstractmethod
    def parse(self, body: Any) -> Parsed: ...


def _mime(raw: bytes) -> str:
    if raw[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


def _vectors(values: Any) -> list[np.ndarray]:
    # null (how some servers write NaN) becomes NaN, and so fails the finiteness check
    return [np.asarray(v, dtype=np.float64) for v in values]


def _scored(entries: Any, labels: tuple[str, ...]) -> tuple[np.ndarray, str]:
    """[{label, score}, ...] (or one dict, top-1) -> scores (in `labels` order when all present)."""
    if isinstance(entries, dict):
        entries = [entries]
    by_label = {str(e["label"]): e["score"] for e in entries}
    top = max(entries, key=lambda e: float(e["score"]) if e["score"] is not None else -math.inf)
    if labels and set(by_label) == set(labels):
        scores = [by_label[lab] for lab in labels]
    else:
        scores = [e["score"] for e in entries]
    return np.asarray(scores, dtype=np.float64), str(top["label"])


class KServe(Protocol):
    """KServe v2 / Triton HTTP: POST /v2/models/<model>/infer with a BYTES tensor of texts."""

    name = "kserve"
    needs_model = True
    count_js = "b.outputs.find((o) => o.datatype !== 'BYTES').shape[0]"

    def request(self, texts: list[str]) -> Request:
        name = contract.input_name(self.target.task)
        # vision: BYTES of base64 images (JSON encoding)
        data = self.images(texts) if name == contract.IMAGE else list(texts)
        tensor = {"name": name, "shape": [len(texts)], "datatype": "BYTES", "data": data}
        return Request("POST", f"/v2/models/{self.target.model}/infer", {"inputs": [tensor]})

    def parse(self, body: Any) -> Parsed:
        outputs = body["outputs"]
        by_name = {o["name"]: o for o in outputs}
        # "embedding": another server's singular naming
        names = (contract.output_names(self.target.task)[0], "embedding")
        main = next((by_name[n] for n in names if n in by_name), None)
        if main is None:  # another server's naming: the first numeric output
            main = next(o for o in outputs if o.get("datatype") != "BYTES")
        arr = np.asarray(main["data"], dtype=np.float64).reshape(main["shape"])
        labels = by_name.get(contract.LABELS)
        labels = [str(x) for x in labels["data"]] if labels else None
        if contract.NUM_VECTORS in by_name:  # multi-vector: rows are zero-padded to the longest
            counts = [int(n) for n in by_name[contract.NUM_VECTORS]["data"]]
            return Parsed([a[:n] for a, n in zip(arr, counts, strict=True)], labels)
        return Parsed(list(arr), labels)


class TritonKServe(KServe):
    """KServe v2 against a Triton ensemble: TEXT is BYTES of shape [n, 1] (dims [1], batched)."""

    name = "triton"

    def request(self, texts: list[str]) -> Request:
        req = super().request(texts)
        req.body["inputs"][0]["shape"] = [len(texts), 1]
        return req


class OpenAIEmbeddings(Protocol):
    """OpenAI-compatible embeddings (Infinity, TEI, our server): POST /v1/embeddings."""

    name = "openai"
    tasks = ("embedding", "vision-embedding")
    count_js = "b.data.length"

    def request(self, texts: list[str]) -> Request:
        if self.target.task == "vision-embedding":  # Infinity's image input
            body = {"input": self.images(texts), "model": self.target.model, "modality": "image"}
            return Request("POST", "/v1/embeddings", body)
        return Request("POST", "/v1/embeddings", {"input": list(texts), "model": self.target.model})

    def parse(self, body: Any) -> Parsed:
        data = sorted(body["data"], key=lambda d: d.get("index", 0))
        return Parsed(_vectors(d["embedding"] for d in data))


class Classify(Protocol):
    """Infinity-style classification: POST /classify -> one [{label, score}, ...] per input."""

    name = "classify"
    tasks = ("classification",)
    count_js = "b.data.length"

    def request(self, texts: list[str]) -> Request:
        return Request("POST", "/classify", {"input": list(texts), "model": self.target.model})

    def parse(self, body: Any) -> Parsed:
        scored = [_scored(e, self.target.labels) for e in body["data"]]
        return Parsed([s for s, _ in scored], [lab for _, lab in scored])


class HFEndpoint(Protocol):
    """A Hugging Face Inference Endpoint URL: {"inputs": [...]} -> vectors or label scores."""

    name = "hf"
    count_js = "b.length"

    def request(self, texts: list[str]) -> Request:
        return Request("POST", "", {"inputs": list(texts)})

    def parse(self, body: Any) -> Parsed:
        if self.target.task == "classification":
            scored = [_scored(e, self.target.labels) for e in body]
            return Parsed([s for s, _ in scored], [lab for _, lab in scored])
        vecs = _vectors(body)
        # the raw feature-extraction pipeline returns (1, tokens, d) per input
        return Parsed([v[0] if v.ndim == 3 and v.shape[0] == 1 else v for v in vecs])


class Noop(Protocol):
    """Any 2xx counts; used only to measure the load generator's own ceiling."""

    name = "noop"
    checks_outputs = False
    count_js = "0"

    def request(self, texts: list[str]) -> Request:
        return Request("POST", "/noop", {"inputs": list(texts)})

    def parse(self, body: Any) -> Parsed:
        return Parsed([])


PROTOCOLS: dict[str, type[Protocol]] = {
    p.name: p for p in (KServe, TritonKServe, OpenAIEmbeddings, Classify, HFEndpoint, Noop)
}


@dataclass(frozen=True)
class Target:
    """An HTTP endpoint and what its answers must look like.

    `token_env` names an environment variable holding a bearer token (read when a run starts,
    never stored or logged). `normalized`: vectors must have unit norm; `labels`: the known label
    set (its order maps integer workload labels to names).
    """

    url: str
    protocol: str = "kserve"
    model: str = ""
    task: str = "embedding"
    dim: int | None = None
    normalized: bool = False
    labels: tuple[str, ...] = ()
    token_env: str | None = None
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"--url must start with http:// or https://; got {self.url!r}")
        object.__setattr__(self, "url", self.url.rstrip("/"))
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"--protocol must be one of {', '.join(PROTOCOLS)}; got {self.protocol!r}"
            )
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        proto = PROTOCOLS[self.protocol]
        if self.task not in proto.tasks:
            serves = [p for p, c in PROTOCOLS.items() if self.task in c.tasks and p != "noop"]
            raise ConfigError(
                f"--protocol {self.protocol} does not serve {self.task}; "
                f"use one of {', '.join(serves)}"
            )
        if proto.needs_model and not self.model:
            raise ConfigError(f"--protocol {self.protocol} needs --model (the served model name)")
        if self.dim is not None and self.dim < 1:
            raise ConfigError(f"dim must be >= 1; got {self.dim}")
        if not self.timeout_s > 0:
            raise ConfigError(f"--timeout must be > 0 seconds; got {self.timeout_s}")


def _headers(target: Target) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if target.token_env:
        token = os.environ.get(target.token_env)
        if not token:
            raise ConfigError(
                f"environment variable {target.token_env} (--token-env) is not set or empty"
            )
        headers["Authorization"] = f"Bearer {token}"
    return headers


# ---------------------------------------------------------------------------------------------
# Output validation


@dataclass
class _Check:
    invalid: int = 0
    reason: str | None = None
    nvec: list[int] = field(default_factory=list)
    correct: int = 0
    labelled: int = 0

    def fail(self, reason: str) -> None:
        self.invalid += 1
        self.reason = self.reason or reason


def _expected_label(lab: Any, labels: tuple[str, ...]) -> str:
    if isinstance(lab, (int, np.integer)) and labels and 0 <= lab < len(labels):
        return labels[lab]
    return str(lab)


def _embedding_problem(v: np.ndarray, target: Target) -> tuple[int, str | None]:
    """(number of vectors, what is wrong or None)."""
    if v.ndim not in (1, 2):
        return 0, f"output of shape {v.shape}"
    vecs = v[None] if v.ndim == 1 else v
    n = vecs.shape[0]
    if n == 0:
        return 0, "no vectors"
    if target.dim is not None and vecs.shape[1] != target.dim:
        return n, f"dimension {vecs.shape[1]} != expected {target.dim}"
    if not np.isfinite(vecs).all():
        return n, "NaN/Inf in output"
    if target.normalized:
        dev = np.abs(np.linalg.norm(vecs, axis=1) - 1.0)
        if dev.max() >= NORM_TOL:
            return n, f"norm off by {dev.max():.2g} (model normalises: expected 1 ± {NORM_TOL:g})"
    return n, None


def _validate(parsed: Parsed, n: int, target: Target, expected: list | None) -> _Check:
    c = _Check()
    got = len(parsed.values)
    if got != n or (parsed.labels is not None and len(parsed.labels) != n):
        c.invalid, c.reason = n, f"{got} outputs for {n} inputs"
        return c
    for j, v in enumerate(parsed.values):
        if target.task != "classification":
            nvec, problem = _embedding_problem(v, target)
            c.nvec.append(nvec)
            if problem:
                c.fail(problem)
            continue
        p = np.asarray(v, dtype=np.float64)
        if p.ndim != 1 or p.size == 0:
            c.fail(f"probabilities of shape {p.shape}")
            continue
        if target.dim is not None and p.size != target.dim:
            c.fail(f"{p.size} probabilities != expected {target.dim}")
            continue
        if not np.isfinite(p).all():
            c.fail("NaN/Inf in probabilities")
            continue
        label = parsed.labels[j] if parsed.labels is not None else None
        if label is None and target.labels and p.size == len(target.labels):
            label = target.labels[int(np.argmax(p))]
        if target.labels and label not in target.labels:
            c.fail(f"unknown label {label!r}")
        if expected is not None and expected[j] is not None and label is not None:
            c.labelled += 1
            c.correct += int(label == _expected_label(expected[j], target.labels))
    return c


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class LoadResult:
    """One HTTP load run. `latency` is over successful requests (open loop: from the scheduled
    send time); `throughput` counts inputs of successful requests per second."""

    mode: str  # closed | open
    generator: str  # aiohttp | k6
    protocol: str
    task: str
    inputs_per_request: int
    vus: int | None
    iterations: int | None
    target_rate: float | None
    max_concurrency: int | None
    latency: Latency
    send_latency: Latency  # from the actual send; equals `latency` in a closed loop
    throughput: Throughput
    requests_per_sec: float  # all completed requests, compared with the ceiling
    total_requests: int
    successful_requests: int
    failed_requests: int
    http_4xx: int
    http_429: int
    http_5xx: int
    http_other: int
    timeouts: int
    connection_errors: int
    invalid_responses: int  # 2xx whose outputs failed a check (counted in failed_requests)
    invalid_embeddings: int  # outputs (inputs) that failed a check
    dropped: int  # in flight at the deadline, cancelled (not a failure)
    unstarted: int  # iterations / arrivals never sent before the deadline
    test_duration_sec: float
    avg_num_vectors: float | None
    min_num_vectors: int | None
    max_num_vectors: int | None
    accuracy: float | None
    late_requests: int
    max_late_ms: float
    client_cpu_percent: float | None  # 100 = one core
    ceiling_rps: float | None = None
    errors: dict[str, str] = field(default_factory=dict)  # first message per failure kind

    def to_row(self) -> dict[str, Any]:
        """The result-row columns this run fills (all in harness.results.COLUMNS)."""
        return {
            "total_requests": self.total_requests,
            "successful_requests": self.successful_requests,
            "failed_requests": self.failed_requests,
            "test_duration_sec": self.test_duration_sec,
            "avg_latency_ms": self.latency.avg,
            "p50_latency_ms": self.latency.p50,
            "p90_latency_ms": self.latency.p90,
            "p95_latency_ms": self.latency.p95,
            "p99_latency_ms": self.latency.p99,
            "throughput_req_per_sec": self.throughput.avg,
            "throughput_peak": self.throughput.peak,
            "throughput_avg": self.throughput.avg,
            "throughput_method": self.throughput.method,
            "vus": self.vus,
            "inputs_per_request": self.inputs_per_request,
            "avg_num_vectors": self.avg_num_vectors,
            "min_num_vectors": self.min_num_vectors,
            "max_num_vectors": self.max_num_vectors,
            "invalid_embeddings": self.invalid_embeddings,
            "accuracy": self.accuracy,
            "task": self.task,
            "mode": "http",
            "protocol": self.protocol,
            "http_4xx": self.http_4xx,
            "http_429": self.http_429,
            "http_5xx": self.http_5xx,
            "timeouts": self.timeouts,
            "connection_errors": self.connection_errors,
            "dropped_requests": self.dropped,
            "late_requests": self.late_requests if self.mode == "open" else None,
            "max_late_ms": self.max_late_ms if self.mode == "open" else None,
            "client_cpu_percent": self.client_cpu_percent,
            "loadgen_ceiling_rps": self.ceiling_rps,
            "load_generator": self.generator,
        }


class _Recorder:
    """Per-request records of one run, kept as plain tuples until the run ends."""

    def __init__(self) -> None:
        # start (scheduled or sent), sent, end (ns); inputs; kind; invalid outputs; correct; labelled
        self.rows: list[tuple[int, int, int, int, str, int, int, int]] = []
        self.nvec: list[int] = []
        self.first: dict[str, str] = {}

    def add(self, start, sent, end, inputs, kind, check: _Check | None, detail: str | None):
        c = check or _Check()
        self.rows.append((start, sent, end, inputs, kind, c.invalid, c.correct, c.labelled))
        self.nvec += c.nvec
        if detail and kind not in self.first:
            self.first[kind] = detail


def _summarise(
    rec: _Recorder,
    *,
    mode: str,
    target: Target,
    inputs_per_request: int,
    wall_s: float,
    cpu_percent: float | None,
    dropped: int,
    unstarted: int,
    late_threshold_ms: float,
    vus: int | None = None,
    iterations: int | None = None,
    rate: float | None = None,
    max_concurrency: int | None = None,
) -> LoadResult:
    if rec.rows:
        cols = list(zip(*rec.rows, strict=True))
        start, sent, end, inputs = (np.asarray(c, dtype=np.int64) for c in cols[:4])
        kind = np.asarray(cols[4])
        invalid_out, correct, labelled = (np.asarray(c, dtype=np.int64) for c in cols[5:])
    else:
        start = sent = end = inputs = invalid_out = correct = labelled = np.zeros(0, np.int64)
        kind = np.zeros(0, dtype=str)
    ok = kind == "ok"
    counts = {k: int((kind == k).sum()) for k in FAILURE_KINDS}
    counts["invalid_responses"] = int((kind == "invalid").sum())
    late = (sent - start) / 1e6
    nvec = np.asarray(rec.nvec) if target.task != "classification" and rec.nvec else None
    n_labelled = int(labelled.sum())
    res = LoadResult(
        mode=mode,
        generator="aiohttp",
        protocol=target.protocol,
        task=target.task,
        inputs_per_request=inputs_per_request,
        vus=vus,
        iterations=iterations,
        target_rate=rate,
        max_concurrency=max_concurrency,
        latency=Latency.from_ns(end[ok] - start[ok]),
        send_latency=Latency.from_ns(end[ok] - sent[ok]),
        throughput=Throughput.from_completions(start[ok], end[ok], inputs[ok]),
        requests_per_sec=Throughput.from_completions(start, end, np.ones_like(end)).avg,
        total_requests=len(rec.rows),
        successful_requests=int(ok.sum()),
        failed_requests=sum(counts.values()),
        invalid_embeddings=int(invalid_out.sum()),
        dropped=dropped,
        unstarted=unstarted,
        test_duration_sec=wall_s,
        avg_num_vectors=float(nvec.mean()) if nvec is not None else None,
        min_num_vectors=int(nvec.min()) if nvec is not None else None,
        max_num_vectors=int(nvec.max()) if nvec is not None else None,
        accuracy=int(correct.sum()) / n_labelled if n_labelled else None,
        late_requests=int((late > late_threshold_ms).sum()),
        max_late_ms=float(late.max()) if late.size else 0.0,
        client_cpu_percent=cpu_percent,
        errors=dict(rec.first),
        **counts,
    )
    if res.failed_requests:
        parts = ", ".join(f"{k}={counts[k]}" for k in FAILURE_KINDS if counts[k])
        first = next(iter(rec.first.values()), "")
        log.warning(
            "%d of %d requests failed (%s); first: %s",
            res.failed_requests,
            res.total_requests,
            parts,
            first,
        )
    return res


def _warn_near_ceiling(res: LoadResult, ceiling_rps: float | None) -> None:
    res.ceiling_rps = ceiling_rps
    if ceiling_rps and res.requests_per_sec >= CEILING_FRACTION * ceiling_rps:
        log.warning(
            "the load generator ran at %.0f req/s, %.0f%% of its own ceiling (%.0f req/s against "
            "a no-op server): the client may be the bottleneck; send more inputs per request "
            "or run the client on another machine",
            res.requests_per_sec,
            100 * res.requests_per_sec / ceiling_rps,
            ceiling_rps,
        )


class _CpuClock:
    """CPU used by this process (the load generator) over a window, in % of one core."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        t = self._proc.cpu_times()
        self._cpu0, self._t0 = t.user + t.system, time.perf_counter()

    def percent(self) -> float:
        t = self._proc.cpu_times()
        wall = max(time.perf_counter() - self._t0, 1e-9)
        return (t.user + t.system - self._cpu0) / wall * 100


# ---------------------------------------------------------------------------------------------
# The client


def _one_line(payload: bytes, limit: int = 200) -> str:
    return " ".join(payload[:limit].decode("utf-8", "replace").split())


class _Client:
    def __init__(self, target: Target, workload: Workload, inputs_per_request: int, session):
        self.target = target
        self.workload = workload
        self.k = inputs_per_request
        self.session = session
        self.adapter = PROTOCOLS[target.protocol](target)
        self.headers = _headers(target)
        self.rec = _Recorder()
        self.inflight = 0

    def _judge(self, status: int, payload: bytes, n: int, labels) -> tuple[str, _Check | None, str]:
        if 200 <= status < 300:
            if not self.adapter.checks_outputs:
                return "ok", None, ""
            try:
                parsed = self.adapter.parse(json.loads(payload))
            except (
                ValueError,
                KeyError,
                TypeError,
                IndexError,
                AttributeError,
                StopIteration,
            ) as e:
                c = _Check(invalid=n, reason=f"unparseable response ({type(e).__name__}: {e})")
                return "invalid", c, c.reason
            c = _validate(parsed, n, self.target, labels)
            return ("ok" if c.invalid == 0 else "invalid"), c, c.reason or ""
        detail = f"HTTP {status}: {_one_line(payload)}"
        if status == 429:
            return "http_429", None, detail
        if 400 <= status < 500:
            return "http_4xx", None, detail
        if 500 <= status < 600:
            return "http_5xx", None, detail
        return "http_other", None, detail

    async def send(self, index: int, sched_ns: int | None = None, *, record: bool = True):
        """One request for the index-th batch; returns (kind, status, payload)."""
        import aiohttp

        texts, labels = self.workload.batch(index, self.k)
        req = self.adapter.request(texts)
        data = json.dumps(req.body).encode()
        status, payload, kind, detail, check = 0, b"", "", "", None
        self.inflight += 1
        sent = time.perf_counter_ns()
        try:
            async with self.session.request(
                req.method, self.target.url + req.path, data=data, headers=self.headers
            ) as resp:
                payload = await resp.read()
                status = resp.status
        except asyncio.TimeoutError:
            kind, detail = "timeouts", f"no answer within {self.target.timeout_s:g} s"
        except (aiohttp.ClientError, OSError) as e:
            kind, detail = "connection_errors", f"{type(e).__name__}: {e}"
        finally:
            self.inflight -= 1
        end = time.perf_counter_ns()
        if not kind:
            kind, check, detail = self._judge(status, payload, len(texts), labels)
        if record:
            start = sent if sched_ns is None else sched_ns
            self.rec.add(start, sent, end, len(texts), kind, check, detail)
        return kind, status, payload, detail


def _session(target: Target, limit: int):
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=target.timeout_s),
    )


async def _preflight(url: str, timeout_s: float = 5.0) -> None:
    """A TCP connect, so an unreachable server is one clear error instead of N failures."""
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname or "", u.port or (443 if u.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except ConnectionRefusedError as e:
        reason, err = "connection refused", e
    except socket.gaierror as e:
        reason, err = f"cannot resolve host {host}", e
    except asyncio.TimeoutError as e:
        reason, err = f"no answer within {timeout_s:g} s", e
    except OSError as e:
        reason, err = e.strerror or str(e), e
    else:
        writer.close()
        return
    raise TargetUnreachable(
        f"cannot reach {url} ({reason}); start the server or fix --url"
    ) from err


async def _warmup(client: _Client, n: int) -> None:
    """Untimed requests (connections, server warm-up); refuse a target that rejects all of them."""
    if n <= 0:
        return
    outcomes = await asyncio.gather(*(client.send(i, record=False) for i in range(n)))
    kinds = {o[0] for o in outcomes}
    url = client.target.url
    if kinds == {"http_4xx"}:
        raise TargetError(
            f"every warm-up request to {url} was refused ({outcomes[0][3]}); "
            "check --model, --protocol and --token-env"
        )
    if kinds == {"connection_errors"}:
        raise TargetUnreachable(
            f"cannot reach {url} ({outcomes[0][3]}); start the server or fix --url"
        )


def _check_positive(**values: float) -> None:
    for name, v in values.items():
        if not v > 0:
            raise ConfigError(f"{name} must be > 0; got {v}")


# ---------------------------------------------------------------------------------------------
# Closed loop (k6 shared-iterations) and open loop (Poisson arrivals)


async def arun_closed_loop(
    target: Target,
    workload: Workload,
    vus: int,
    iterations: int,
    max_duration_s: float = 60.0,
    inputs_per_request: int = 1,
    *,
    warmup_requests: int | None = None,
    ceiling_rps: float | None = None,
    check_reachable: bool = True,
) -> LoadResult:
    """Async form of `run_closed_loop`."""
    _check_positive(
        vus=vus,
        iterations=iterations,
        max_duration_s=max_duration_s,
        inputs_per_request=inputs_per_request,
    )
    _headers(target)  # a missing token is a config error, found before any network
    if check_reachable:
        await _preflight(target.url)
    async with _session(target, vus) as session:
        client = _Client(target, workload, inputs_per_request, session)
        await _warmup(client, vus if warmup_requests is None else warmup_requests)
        shared = itertools.count()  # k6 shared-iterations: each VU takes the next index
        started = 0

        async def vu() -> None:
            nonlocal started
            while (i := next(shared)) < iterations:
                started += 1
                await client.send(i)

        cpu = _CpuClock()
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(vu()) for _ in range(vus)]
        done, pending = await asyncio.wait(tasks, timeout=max_duration_s)
        dropped = client.inflight
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        wall, cpu_pct = time.perf_counter() - t0, cpu.percent()
        for t in done:
            t.result()  # a bug in the loop surfaces here, with its traceback
    if pending:
        log.info(
            "max duration %.0f s reached: %d of %d iterations started, %d in flight dropped",
            max_duration_s,
            started,
            iterations,
            dropped,
        )
    res = _summarise(
        client.rec,
        mode="closed",
        target=target,
        inputs_per_request=inputs_per_request,
        wall_s=wall,
        cpu_percent=cpu_pct,
        dropped=dropped,
        unstarted=iterations - started,
        late_threshold_ms=math.inf,
        vus=vus,
        iterations=iterations,
    )
    _warn_near_ceiling(res, ceiling_rps)
    return res


def _poisson_offsets_ns(rate: float, duration_s: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    expected = rate * duration_s
    n = int(expected + 6 * math.sqrt(expected) + 16)
    while True:
        t = np.cumsum(rng.exponential(1.0 / rate, n))
        if t[-1] >= duration_s:
            return (t[t < duration_s] * 1e9).astype(np.int64)
        n *= 2


async def arun_open_loop(
    target: Target,
    workload: Workload,
    rate: float,
    duration_s: float,
    inputs_per_request: int = 1,
    max_concurrency: int = 64,
    *,
    max_duration_s: float | None = None,
    late_threshold_ms: float = 1.0,
    seed: int = 0,
    warmup_requests: int | None = None,
    ceiling_rps: float | None = None,
    check_reachable: bool = True,
) -> LoadResult:
    """Async form of `run_open_loop`."""
    _check_positive(
        rate=rate,
        duration_s=duration_s,
        inputs_per_request=inputs_per_request,
        max_concurrency=max_concurrency,
    )
    if max_duration_s is None:
        max_duration_s = 2 * duration_s + min(target.timeout_s, 30.0)
    if max_duration_s < duration_s:
        raise ConfigError(f"max_duration_s ({max_duration_s}) must be >= duration_s ({duration_s})")
    offsets = _poisson_offsets_ns(rate, duration_s, seed)
    _headers(target)
    if check_reachable:
        await _preflight(target.url)
    async with _session(target, max_concurrency) as session:
        client = _Client(target, workload, inputs_per_request, session)
        n_warm = min(max_concurrency, 16) if warmup_requests is None else warmup_requests
        await _warmup(client, n_warm)
        slots = asyncio.Semaphore(max_concurrency)
        tasks: set[asyncio.Task] = set()

        async def fire(i: int, sched: int) -> None:
            try:
                await client.send(i, sched_ns=sched)
            finally:
                slots.release()

        cpu = _CpuClock()
        t0 = time.perf_counter_ns() + 1_000_000
        hard = t0 + int(max_duration_s * 1e9)
        sent = 0
        for i, off in enumerate(offsets.tolist()):
            sched = t0 + off
            delay = sched - time.perf_counter_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            left = (hard - time.perf_counter_ns()) / 1e9
            if left <= 0:
                break
            if slots.locked():  # at the concurrency cap: wait, and the request goes out late
                try:
                    await asyncio.wait_for(slots.acquire(), left)
                except asyncio.TimeoutError:
                    break
            else:
                await slots.acquire()
            task = asyncio.create_task(fire(i, sched))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        pending: set = set()
        if tasks:
            left = max((hard - time.perf_counter_ns()) / 1e9, 0.0)
            _, pending = await asyncio.wait(set(tasks), timeout=left)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        wall, cpu_pct = (time.perf_counter_ns() - t0) / 1e9, cpu.percent()
    res = _summarise(
        client.rec,
        mode="open",
        target=target,
        inputs_per_request=inputs_per_request,
        wall_s=wall,
        cpu_percent=cpu_pct,
        dropped=len(pending),
        unstarted=len(offsets) - sent,
        late_threshold_ms=late_threshold_ms,
        rate=rate,
        max_concurrency=max_concurrency,
    )
    if res.late_requests:
        log.warning(
            "%d of %d requests went out more than %g ms after their scheduled time (max %.1f ms)"
            "; latency is measured from the schedule",
            res.late_requests,
            res.total_requests,
            late_threshold_ms,
            res.max_late_ms,
        )
    _warn_near_ceiling(res, ceiling_rps)
    return res


def _run(coro):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coro.close()
        raise RuntimeError("called inside a running event loop; await arun_closed_loop/...")
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_closed_loop(
    target: Target,
    workload: Workload,
    vus: int,
    iterations: int,
    max_duration_s: float = 60.0,
    inputs_per_request: int = 1,
    *,
    warmup_requests: int | None = None,
    ceiling_rps: float | None = None,
    check_reachable: bool = True,
) -> LoadResult:
    """k6 shared-iterations: `vus` users share `iterations` requests, stopping at max duration.

    Requests in flight at the deadline are cancelled and counted as `dropped`, iterations never
    started as `unstarted`. Warm-up defaults to one untimed request per VU; with `ceiling_rps`
    (from `measure_ceiling`) the run warns when it reaches 50% of it.
    """
    return _run(
        arun_closed_loop(
            target,
            workload,
            vus,
            iterations,
            max_duration_s,
            inputs_per_request,
            warmup_requests=warmup_requests,
            ceiling_rps=ceiling_rps,
            check_reachable=check_reachable,
        )
    )


def run_open_loop(
    target: Target,
    workload: Workload,
    rate: float,
    duration_s: float,
    inputs_per_request: int = 1,
    max_concurrency: int = 64,
    *,
    max_duration_s: float | None = None,
    late_threshold_ms: float = 1.0,
    seed: int = 0,
    warmup_requests: int | None = None,
    ceiling_rps: float | None = None,
    check_reachable: bool = True,
) -> LoadResult:
    """Poisson arrivals at `rate` requests/s for `duration_s`, at most `max_concurrency` in flight.

    Latency runs from each request's scheduled send time; requests sent more than
    `late_threshold_ms` after it are counted in `late_requests`. At `max_duration_s` (default
    2 x duration + min(timeout, 30 s)) unsent arrivals are `unstarted`, in-flight ones `dropped`.
    """
    return _run(
        arun_open_loop(
            target,
            workload,
            rate,
            duration_s,
            inputs_per_request,
            max_concurrency,
            max_duration_s=max_duration_s,
            late_threshold_ms=late_threshold_ms,
            seed=seed,
            warmup_requests=warmup_requests,
            ceiling_rps=ceiling_rps,
            check_reachable=check_reachable,
        )
    )


# ---------------------------------------------------------------------------------------------
# The generator's own ceiling

_NOOP_SERVER = """
import socket, sys
from aiohttp import web

async def noop(request):
    await request.read()
    return web.Response(body=b"{}", content_type="application/json")

app = web.Application()
app.router.add_route("*", "/{tail:.*}", noop)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(1024)  # connections queue from now on, so the port can be printed right away
print(sock.getsockname()[1], flush=True)
try:
    import uvloop
    loop = uvloop.new_event_loop()
except ImportError:
    import asyncio
    loop = asyncio.new_event_loop()
web.run_app(app, sock=sock, print=None, access_log=None, loop=loop, backlog=1024)
"""


def measure_ceiling(duration_s: float = 3.0, vus: int = 32, inputs_per_request: int = 1) -> float:
    """Requests/s this load generator reaches against a no-op aiohttp server in a subprocess."""
    import select

    proc = subprocess.Popen(
        [sys.executable, "-c", _NOOP_SERVER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            err = proc.stderr.read() if proc.poll() is not None else "no port printed in 30 s"
            raise BillionbenchError(f"the no-op server did not start: {err.strip()[-300:]}")
        target = Target(f"http://127.0.0.1:{int(line)}", protocol="noop", timeout_s=10.0)
        workload = Workload(["ceiling"], None, np.ones(1, dtype=np.int64), "noop")
        res = run_closed_loop(
            target,
            workload,
            vus,
            iterations=10**9,
            max_duration_s=duration_s,
            inputs_per_request=inputs_per_request,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.info(
        "load generator ceiling: %.0f req/s (%d VUs, client CPU %.0f%%)",
        res.requests_per_sec,
        vus,
        res.client_cpu_percent or 0.0,
    )
    return res.requests_per_sec


# ---------------------------------------------------------------------------------------------
# k6: the same closed-loop scenario as a generated script

_K6_TEMPLATE = """\
// Generated by billionbench (harness/loadgen.py): k6 shared-iterations, the scenario
// run_closed_loop runs. Failures are counted with Counters (a Rate read as a count was always 0).
import http from 'k6/http';
import exec from 'k6/execution';
import { SharedArray } from 'k6/data';
import { Counter, Trend } from 'k6/metrics';

const TEXTS = new SharedArray('texts', function () { return __TEXTS__; });
const K = __K__;
const METHOD = __METHOD__;
const URL = __URL__;
const TEMPLATE = __TEMPLATE__;
const TEXTS_AT = __PATH__;
const TOKEN_ENV = __TOKEN_ENV__;

export const options = {
  scenarios: {
    shared_load_test: {
      executor: 'shared-iterations',
      vus: __VUS__,
      iterations: __ITERATIONS__,
      maxDuration: __MAX_DURATION__,
    },
  },
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'],
};

const okLatency = new Trend('bb_ok_latency', true);
const okRequests = new Counter('bb_ok_requests');
const okInputs = new Counter('bb_ok_inputs');
const invalidResponses = new Counter('bb_invalid_responses');
const invalidOutputs = new Counter('bb_invalid_outputs');
const http4xx = new Counter('bb_http_4xx');
const http429 = new Counter('bb_http_429');
const http5xx = new Counter('bb_http_5xx');
const httpOther = new Counter('bb_http_other');
const timeouts = new Counter('bb_timeouts');
const connectionErrors = new Counter('bb_connection_errors');

const headers = { 'Content-Type': 'application/json' };
if (TOKEN_ENV) headers['Authorization'] = 'Bearer ' + __ENV[TOKEN_ENV];
const params = { headers: headers, timeout: __TIMEOUT__ };

function countOutputs(b) {
  return __COUNT_JS__;
}

export default function () {
  const i = exec.scenario.iterationInTest;
  const texts = [];
  for (let j = 0; j < K; j++) texts.push(TEXTS[(i * K + j) % TEXTS.length]);
  const body = JSON.parse(JSON.stringify(TEMPLATE));
  let o = body;
  for (let p = 0; p < TEXTS_AT.length - 1; p++) o = o[TEXTS_AT[p]];
  o[TEXTS_AT[TEXTS_AT.length - 1]] = texts;
  const res = http.request(METHOD, URL, JSON.stringify(body), params);
  if (res.status >= 200 && res.status < 300) {
    let n = -1;
    try { n = countOutputs(res.json()); } catch (e) { n = -1; }
    if (n === K) {
      okRequests.add(1);
      okInputs.add(K);
      okLatency.add(res.timings.duration);
    } else {
      invalidResponses.add(1);
      invalidOutputs.add(K);
    }
  } else if (res.status === 429) {
    http429.add(1);
  } else if (res.status >= 400 && res.status < 500) {
    http4xx.add(1);
  } else if (res.status >= 500 && res.status < 600) {
    http5xx.add(1);
  } else if (res.status === 0) {
    if (res.error_code === 1050) timeouts.add(1);
    else connectionErrors.add(1);
  } else {
    httpOther.add(1);
  }
}
"""


def k6_available() -> bool:
    return shutil.which("k6") is not None


def _path_to(obj: Any, needle: list, path: tuple = ()) -> tuple | None:
    if obj == needle:
        return path
    items = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    )
    for k, v in items:
        found = _path_to(v, needle, (*path, k))
        if found is not None:
            return found
    return None


def k6_script(
    target: Target,
    workload: Workload,
    vus: int,
    iterations: int,
    max_duration_s: float = 60.0,
    inputs_per_request: int = 1,
) -> str:
    """The k6 script (JS) for the closed-loop scenario: shared-iterations, same request bodies.

    k6 checks status and the number of outputs; the full output checks (dimension, NaN, norm,
    labels, accuracy) are the aiohttp generator's.
    """
    _check_positive(
        vus=vus,
        iterations=iterations,
        max_duration_s=max_duration_s,
        inputs_per_request=inputs_per_request,
    )
    adapter = PROTOCOLS[target.protocol](target)
    marks = [f"\x00bb-text-{j}\x00" for j in range(inputs_per_request)]
    req = adapter.request(marks)
    path = _path_to(req.body, marks)
    if path is None:
        raise ConfigError(f"--protocol {target.protocol}: request body has no list of texts")
    template = _path_set(req.body, path, [])
    subs = {
        "__TEXTS__": json.dumps(workload.texts),
        "__K__": str(inputs_per_request),
        "__METHOD__": json.dumps(req.method),
        "__URL__": json.dumps(target.url + req.path),
        "__TEMPLATE__": json.dumps(template),
        "__PATH__": json.dumps(list(path)),
        "__TOKEN_ENV__": json.dumps(target.token_env or ""),
        "__VUS__": str(int(vus)),
        "__ITERATIONS__": str(int(iterations)),
        "__MAX_DURATION__": json.dumps(f"{max_duration_s:g}s"),
        "__TIMEOUT__": json.dumps(f"{target.timeout_s:g}s"),
        "__COUNT_JS__": adapter.count_js,
    }
    script = _K6_TEMPLATE
    for k, v in subs.items():
        script = script.replace(k, v)
    return script


def _path_set(obj: Any, path: tuple, value: Any) -> Any:
    obj = json.loads(json.dumps(obj))
    o = obj
    for k in path[:-1]:
        o = o[k]
    o[path[-1]] = value
    return obj


def _k6_metric(summary: dict, name: str) -> dict:
    m = summary.get("metrics", {}).get(name) or {}
    return m.get("values", m)  # handleSummary nests under "values"; --summary-export does not


def parse_k6_summary(
    summary: dict,
    *,
    target: Target,
    vus: int,
    iterations: int,
    inputs_per_request: int,
    wall_s: float | None = None,
    cpu_percent: float | None = None,
) -> LoadResult:
    """A k6 summary (from --summary-export of a `k6_script`) as a LoadResult."""

    def count(name: str) -> int:
        return int(_k6_metric(summary, name).get("count", 0))

    ok = count("bb_ok_requests")
    counts = {k: count(f"bb_{k}") for k in FAILURE_KINDS}
    lat = _k6_metric(summary, "bb_ok_latency")
    nan = float("nan")
    latency = Latency(
        ok,
        *(float(lat.get(k, nan)) for k in ("avg", "min", "med", "p(90)", "p(95)", "p(99)", "max")),
    )
    its = _k6_metric(summary, "iterations")
    duration = summary.get("state", {}).get("testRunDurationMs")
    if duration is not None:
        duration = duration / 1000
    elif its.get("rate"):
        duration = its["count"] / its["rate"]
    else:
        duration = wall_s or 0.0
    unstarted = count("dropped_iterations")
    dropped = max(iterations - unstarted - int(its.get("count", 0)), 0)
    inputs_rate = count("bb_ok_inputs") / duration if duration else 0.0
    total = ok + sum(counts.values())
    nvec = 1 if target.task == "embedding" and ok else None
    return LoadResult(
        mode="closed",
        generator="k6",
        protocol=target.protocol,
        task=target.task,
        inputs_per_request=inputs_per_request,
        vus=vus,
        iterations=iterations,
        target_rate=None,
        max_concurrency=None,
        latency=latency,
        send_latency=latency,
        throughput=Throughput(inputs_rate, inputs_rate, "k6-summary", duration),
        requests_per_sec=total / duration if duration else 0.0,
        total_requests=total,
        successful_requests=ok,
        failed_requests=sum(counts.values()),
        invalid_embeddings=count("bb_invalid_outputs"),
        dropped=dropped,
        unstarted=unstarted,
        test_duration_sec=duration,
        avg_num_vectors=None if nvec is None else float(nvec),
        min_num_vectors=nvec,
        max_num_vectors=nvec,
        accuracy=None,
        late_requests=0,
        max_late_ms=0.0,
        client_cpu_percent=cpu_percent,
        **counts,
    )


def run_k6(
    target: Target,
    workload: Workload,
    vus: int,
    iterations: int,
    max_duration_s: float = 60.0,
    inputs_per_request: int = 1,
    *,
    k6_bin: str | None = None,
    ceiling_rps: float | None = None,
    check_reachable: bool = True,
) -> LoadResult:
    """Run the closed-loop scenario with k6 (`k6 run --summary-export`); K6Missing without it."""
    exe = k6_bin or shutil.which("k6")
    if not exe:
        raise K6Missing()
    _headers(target)  # a missing token fails here, not as N x 401
    script = k6_script(target, workload, vus, iterations, max_duration_s, inputs_per_request)
    if check_reachable:
        _run(_preflight(target.url))
    import resource

    with tempfile.TemporaryDirectory(prefix="billionbench-k6-") as d:
        script_path, summary_path = Path(d, "script.js"), Path(d, "summary.json")
        script_path.write_text(script)
        cmd = [exe, "run", "--quiet", "--no-usage-report", "--summary-export"]
        cmd += [str(summary_path), str(script_path)]
        env = {**os.environ, "K6_NO_USAGE_REPORT": "true"}
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=max_duration_s + 120, env=env
            )
        except subprocess.TimeoutExpired as e:
            raise BillionbenchError(f"k6 did not finish within {max_duration_s + 120:g} s") from e
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0 or not summary_path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BillionbenchError(f"k6 run failed (exit {proc.returncode}): {tail[0]}")
        summary = json.loads(summary_path.read_text())
    cpu = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / wall * 100
    res = parse_k6_summary(
        summary,
        target=target,
        vus=vus,
        iterations=iterations,
        inputs_per_request=inputs_per_request,
        wall_s=wall,
        cpu_percent=cpu,
    )
    _warn_near_ceiling(res, ceiling_rps)
    return res
