"""Protocol adapters (one small class per server API) and the `Target` they are built for.

An adapter turns a batch of inputs into a `Request` and a response body into `Parsed` outputs;
`Target` names the endpoint, its protocol and what its answers must look like.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from core import contract
from core.contract import data_uri
from core.errors import ConfigError
from loadgen import grpc

TASKS = ("embedding", "classification", "vision-embedding")


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # appended to the target URL ("" posts to the URL itself)
    body: Any  # JSON-serialisable (gRPC: the serialised message)


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
    transport: ClassVar[str] = "http"  # or "grpc": a grpc.aio channel instead of aiohttp

    def __init__(self, target: Target):
        self.target = target
        self._uris: dict[int, str] = {}

    def images(self, items: list) -> list[str]:
        """Images as base64 data URIs, encoded once per workload item (not per request)."""
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

    def encode(self, body: Any) -> bytes:
        """The request body on the wire."""
        return json.dumps(body).encode()

    def decode(self, payload: bytes) -> Any:
        """The response body `parse` takes; ValueError when it is not one."""
        return json.loads(payload)


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


class KServeGrpc(Protocol):
    """KServe v2 / Triton over gRPC: ModelInfer with raw tensor contents (BYTES [n] of texts)."""

    name = "kserve-grpc"
    needs_model = True
    transport = "grpc"
    count_js = ""  # k6 speaks HTTP here: k6_script refuses a gRPC target

    def request(self, texts: list[str]) -> Request:
        name = contract.input_name(self.target.task)
        # texts as UTF-8, images as their raw file bytes (no base64 on gRPC)
        body = grpc.infer_request(self.target.model, name, list(texts))
        return Request("POST", grpc.MODEL_INFER, body)

    def encode(self, body: Any) -> bytes:
        return body  # serialised once, in request()

    def decode(self, payload: bytes) -> Any:
        return grpc.parse_response(payload)

    def parse(self, body: Any) -> Parsed:
        main = contract.output_names(self.target.task)[0]
        if main not in body:
            raise KeyError(f"no output {main!r} in {sorted(body)}")
        arr = np.asarray(body[main][1], dtype=np.float64)
        labels = body.get(contract.LABELS)
        labels = [str(x) for x in labels[1]] if labels else None
        if contract.NUM_VECTORS in body:  # multi-vector: rows are zero-padded to the longest
            counts = [int(n) for n in body[contract.NUM_VECTORS][1]]
            return Parsed([a[:n] for a, n in zip(arr, counts, strict=True)], labels)
        return Parsed(list(arr), labels)


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
    p.name: p
    for p in (KServe, TritonKServe, KServeGrpc, OpenAIEmbeddings, Classify, HFEndpoint, Noop)
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
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"--protocol must be one of {', '.join(PROTOCOLS)}; got {self.protocol!r}"
            )
        if PROTOCOLS[self.protocol].transport == "grpc":
            # host:port (tritonclient's form) or grpc://host:port; kept as grpc://host:port
            hostport = self.url.removeprefix("grpc://").rstrip("/")
            if "://" in hostport or ":" not in hostport:
                raise ConfigError(
                    f"--protocol {self.protocol} takes --url host:port (gRPC); got {self.url!r}"
                )
            object.__setattr__(self, "url", "grpc://" + hostport)
        elif not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"--url must start with http:// or https://; got {self.url!r}")
        object.__setattr__(self, "url", self.url.rstrip("/"))
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
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
