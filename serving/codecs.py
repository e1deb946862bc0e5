"""One codec per task: how a request becomes engine inputs and a prediction becomes a response.

The server's routes are the same for every task. What differs per task lives here: texts or
images in, which tensors out, and which routes the task has at all.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from core import contract
from core.errors import ConfigError
from engines.pipeline import Prediction
from engines.vision import ImageError

Outputs = dict[str, tuple[str, Any]]  # KServe output name -> (datatype, array or list of str)


class HttpError(Exception):
    """A request the server answers with `status` and a one-line `reason`."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class Codec(ABC):
    """What the routes need from one task: its inputs, its outputs, the routes it refuses.

    A codec has `embeddings(pred)` or `classify(pred)` for the routes it does not refuse.
    """

    task: ClassVar[str]
    modality: ClassVar[str] = "text"  # what /v1/embeddings takes unless the body says otherwise
    route: ClassVar[str]  # the route that serves this task best (hints, the start banner)
    refuses: ClassVar[dict[str, str]] = {}  # route -> why this task has none (answered with 400)

    def __init__(self, engine: Any, *, max_inputs: int, max_text_chars: int):
        self.engine = engine
        self.spec = spec = engine.spec
        self.name = spec.name
        self.input_name = contract.input_name(spec.task)
        self.max_inputs = max_inputs
        self.max_text_chars = max_text_chars

    def accept(self, route: str) -> None:
        """Raise a 400 that points to the right route when this task has no `route`."""
        reason = self.refuses.get(route)
        if reason is not None:
            raise HttpError(400, f"{self.name} {reason}")

    def check_modality(self, modality: Any) -> None:
        if modality not in ("text", "image"):
            raise HttpError(400, f"modality must be 'text' or 'image'; got {modality!r}")
        if modality != self.modality:
            kind = "images" if self.modality == "image" else "text"
            raise HttpError(400, f"{self.name} embeds {kind}; got modality {modality!r}")

    @abstractmethod
    async def kserve_inputs(self, values: list) -> list:
        """The checked engine inputs from the elements of the KServe input tensor."""

    @abstractmethod
    async def json_inputs(self, value: Any) -> list:
        """The checked engine inputs from the `input` field of an OpenAI / Infinity body."""

    @abstractmethod
    def kserve_outputs(self, pred: Prediction) -> Outputs:
        """The KServe output tensors of a prediction."""

    def _check_count(self, n: int) -> None:
        if n > self.max_inputs:
            raise HttpError(413, f"{n} inputs in one request; the limit is {self.max_inputs}")


class _TextCodec(Codec):
    """Texts: the request's list, with the server's own rules (characters per input, no blank
    text, valid Unicode) checked on every input before any is tokenized. The engine then checks
    each input's type and tokenizes it, once, on the batcher's pool, off the event loop; an
    input over the model's length is refused there (413) unless the server truncates."""

    async def kserve_inputs(self, values: list) -> list:
        return self.texts(values)

    async def json_inputs(self, value: Any) -> list:
        return self.texts(value)

    def texts(self, value: Any) -> list:
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts:
            raise HttpError(400, "input must be a non-empty string or list of strings")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                continue  # the engine names it
            if len(t) > self.max_text_chars:
                raise HttpError(
                    413, f"input {i} has {len(t)} characters; the limit is {self.max_text_chars}"
                )
            if not t.strip():
                raise HttpError(400, f"input {i} is empty")
            if not t.isascii():
                try:
                    t.encode("utf-8")
                except UnicodeEncodeError:
                    raise HttpError(
                        400, f"input {i} is not valid Unicode text (a lone surrogate)"
                    ) from None
        return texts


class ClassificationCodec(_TextCodec):
    task = "classification"
    route = "/classify"
    refuses = {
        "embeddings": "is a classifier; use /classify",
        "embeddings_image": "embeds text; use /v1/embeddings",
    }

    def kserve_outputs(self, pred: Prediction) -> Outputs:
        return {
            contract.PROBABILITIES: ("FP32", pred.values),
            contract.LABELS: ("BYTES", pred.labels),
        }

    def classify(self, pred: Prediction) -> list[list[dict[str, Any]]]:
        """Infinity's /classify entries: every label with its score, the likeliest first."""
        labels = self.spec.labels
        return [
            sorted(
                ({"label": labels[j], "score": float(p[j])} for j in range(len(labels))),
                key=lambda d: -d["score"],
            )
            for p in np.asarray(pred.values)
        ]


class EmbeddingCodec(_TextCodec):
    task = "embedding"
    route = "/v1/embeddings"
    refuses = {
        "classify": "is an embedding model; use /v1/embeddings",
        "embeddings_image": "embeds text; use /v1/embeddings",
    }

    def kserve_outputs(self, pred: Prediction) -> Outputs:
        return {contract.EMBEDDINGS: ("FP32", pred.values)}

    def embeddings(self, pred: Prediction) -> list[list[float]]:
        return [v.tolist() for v in pred.values]


class VisionEmbeddingCodec(Codec):
    task = "vision-embedding"
    modality = "image"
    route = "/v1/embeddings"
    refuses = {"classify": "is an embedding model; use /v1/embeddings"}

    async def kserve_inputs(self, values: list) -> list:
        return await self.decode_images(list(values))

    async def json_inputs(self, value: Any) -> list:
        # Infinity's image input: base64 data URIs, one string or a list
        return await self.decode_images(value if isinstance(value, list) else [value])

    async def decode_images(self, items: Any) -> list:
        """Check and decode every image off the event loop; 4xx names the first bad one."""
        if not isinstance(items, list) or not items:
            raise HttpError(400, "input must be a non-empty list of images (base64 or data URI)")
        self._check_count(len(items))

        def decode() -> list:
            out = []
            for i, x in enumerate(items):
                try:
                    out.append(self.engine.pipeline.decode([x])[0])
                except ImageError as e:
                    raise HttpError(e.status, f"input {i}: {e}") from None
            return out

        return await asyncio.get_running_loop().run_in_executor(None, decode)

    def kserve_outputs(self, pred: Prediction) -> Outputs:
        return {
            contract.EMBEDDINGS: ("FP32", pred.values),
            contract.NUM_VECTORS: ("INT64", np.asarray(pred.lengths, dtype=np.int64)),
        }

    def embeddings(self, pred: Prediction) -> list[list[list[float]]]:
        # one list of vectors per image, as Infinity returns multi-vector embeddings
        return [v[:n].tolist() for v, n in zip(pred.values, pred.lengths, strict=True)]


CODECS: dict[str, type[Codec]] = {
    c.task: c for c in (ClassificationCodec, EmbeddingCodec, VisionEmbeddingCodec)
}


def codec_for(engine: Any, **limits: Any) -> Codec:
    """The codec of the engine's task; `limits`: max_inputs, max_text_chars."""
    task = engine.spec.task
    try:
        cls = CODECS[task]
    except KeyError:
        raise ConfigError(
            f"the server has no codec for task {task!r}; it serves {sorted(CODECS)}"
        ) from None
    return cls(engine, **limits)
