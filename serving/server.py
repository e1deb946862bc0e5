"""HTTP server over the dynamic batcher: KServe v2 / Triton, OpenAI `/v1/embeddings`,
Infinity-style `/classify`, and Prometheus `/metrics`.

Every bad request gets a 4xx with a one-line reason and the server keeps serving; a full queue
answers 429 with Retry-After, never a silent drop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines import contract
from engines.base import Engine
from engines.errors import BillionbenchError
from serving.batcher import BatcherStopped, DynamicBatcher, QueueFull
from serving.kserve import HEADER, ProtocolError, build_response, parse_request
from serving.metrics import HttpMetrics, exposition

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerLimits:
    max_body_bytes: int = 8 * 2**20
    max_text_chars: int = 100_000
    truncate: bool = False  # TEI's default: over-long inputs are an error, not silently cut


class HttpError(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class Server:
    """The request handlers; `app()` wires them into an aiohttp application."""

    def __init__(self, engine: Engine, batcher: DynamicBatcher, limits: ServerLimits | None = None):
        self.engine = engine
        self.batcher = batcher
        self.limits = limits or ServerLimits()
        self.spec = engine.spec
        self.name = engine.spec.name
        self.metrics = HttpMetrics()
        self._max_inputs = batcher.config.max_request_inputs

    # ---------------------------------------------------------------- plumbing
    def app(self):
        from aiohttp import web

        app = web.Application(
            client_max_size=self.limits.max_body_bytes, middlewares=[self._errors]
        )
        r = app.router
        r.add_get("/v2/health/ready", self.ready)
        r.add_get("/v2/health/live", self.live)
        r.add_get("/v2", self.server_metadata)
        r.add_get("/v2/models/{name}", self.model_metadata)
        r.add_get("/v2/models/{name}/ready", self.model_ready)
        r.add_post("/v2/models/{name}/infer", self.kserve_infer)
        r.add_get("/v2/models/{name}/versions/{v}", self.model_metadata)
        r.add_post("/v2/models/{name}/versions/{v}/infer", self.kserve_infer)
        r.add_post("/v1/embeddings", self.openai_embeddings)
        r.add_post("/embeddings", self.openai_embeddings)
        r.add_post("/embeddings_image", self.infinity_embeddings_image)
        r.add_post("/classify", self.classify)
        r.add_get("/metrics", self.prometheus)
        return app

    @property
    def _errors(self):
        from aiohttp import web

        @web.middleware
        async def errors(request, handler):
            t0 = time.perf_counter()
            status = 500
            try:
                resp = await handler(request)
                status = resp.status
                return resp
            except HttpError as e:
                status = e.status
                return web.json_response({"error": e.reason}, status=e.status, headers=e.headers)
            except web.HTTPException as e:  # 404/405/413 from aiohttp itself
                status = e.status
                reason = e.reason
                if e.status == 413:
                    reason = f"request body over {self.limits.max_body_bytes} bytes"
                return web.json_response({"error": reason}, status=e.status)
            except Exception as e:  # never take the server down; say what failed
                log.exception("request failed")
                return web.json_response(
                    {"error": f"internal error: {type(e).__name__}: {e}"}, status=500
                )
            finally:
                self.metrics.observe(
                    request.path.split("/")[1] or "/", status, time.perf_counter() - t0
                )

        return errors

    async def _json(self, request) -> Any:
        raw = await request.read()
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise HttpError(400, f"malformed JSON: {str(e).splitlines()[0]}") from None

    def _check_texts(self, texts: Any) -> list[str]:
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts:
            raise HttpError(400, "input must be a non-empty string or list of strings")
        if len(texts) > self._max_inputs:
            raise HttpError(
                413, f"{len(texts)} inputs in one request; the limit is {self._max_inputs}"
            )
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise HttpError(400, f"input {i} is {type(t).__name__}, not a string")
            if not t.strip():
                raise HttpError(400, f"input {i} is empty")
            if len(t) > self.limits.max_text_chars:
                raise HttpError(
                    413,
                    f"input {i} has {len(t)} characters; the limit is {self.limits.max_text_chars}",
                )
        if not self.limits.truncate:
            self._check_tokens(texts)
        return texts

    def _check_tokens(self, texts: list[str]) -> None:
        pipe = self.engine.pipeline
        limit = pipe.max_seq_len
        # a text cannot have more tokens than characters + specials; only long ones are counted
        long = [i for i, t in enumerate(texts) if len(t) + 2 > limit]
        if not long:
            return
        ids = pipe.tokenizer([texts[i] for i in long], truncation=False)["input_ids"]
        for i, x in zip(long, ids, strict=True):
            if len(x) > limit:
                raise HttpError(
                    413,
                    f"input {i} has {len(x)} tokens; the model takes at most "
                    f"{limit} (start the server with --truncate to cut inputs)",
                )

    async def _predict(self, texts: list[str]):
        loop = asyncio.get_running_loop()
        try:
            # tokenization happens in submit(); keep it off the event loop
            fut = await loop.run_in_executor(None, self.batcher.submit, texts)
        except BatcherStopped:
            raise HttpError(503, "the server is shutting down", {"Retry-After": "1"}) from None
        except QueueFull as e:
            retry = max(1, math.ceil(e.retry_after_s))
            raise HttpError(429, f"queue full: {e.reason}", {"Retry-After": str(retry)}) from None
        except BillionbenchError as e:
            raise HttpError(400, str(e)) from None
        except ValueError as e:
            raise HttpError(413, str(e)) from None
        try:
            return await asyncio.wrap_future(fut)
        except BatcherStopped:
            raise HttpError(503, "the server is shutting down", {"Retry-After": "1"}) from None
        except BillionbenchError as e:
            raise HttpError(400, str(e)) from None

    def _model(self, request) -> None:
        name = request.match_info["name"]
        if name != self.name:
            raise HttpError(404, f"unknown model {name!r}; this server has {self.name!r}")

    # ---------------------------------------------------------------- KServe v2
    async def ready(self, request):
        from aiohttp import web

        return web.json_response({"ready": True})

    async def live(self, request):
        from aiohttp import web

        return web.json_response({"live": True})

    async def server_metadata(self, request):
        from aiohttp import web

        return web.json_response(
            {"name": "billionbench", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
        )

    @property
    def _vision(self) -> bool:
        return self.spec.task == "vision-embedding"

    async def _decode_images(self, items: Any) -> list:
        """Check and decode every image off the event loop; 4xx names the first bad one."""
        from engines.vision import ImageError

        if not isinstance(items, list) or not items:
            raise HttpError(400, "input must be a non-empty list of images (base64 or data URI)")
        if len(items) > self._max_inputs:
            raise HttpError(
                413, f"{len(items)} inputs in one request; the limit is {self._max_inputs}"
            )
        pipe = self.engine.pipeline

        def decode() -> list:
            out = []
            for i, x in enumerate(items):
                try:
                    out.append(pipe.decode([x])[0])
                except ImageError as e:
                    raise HttpError(e.status, f"input {i}: {e}") from None
            return out

        return await asyncio.get_running_loop().run_in_executor(None, decode)

    async def model_metadata(self, request):
        from aiohttp import web

        self._model(request)
        return web.json_response(
            {
                "name": self.name,
                "versions": ["1"],
                "platform": f"billionbench_{self.engine.config.engine}",
                "inputs": [
                    {
                        "name": contract.input_name(self.spec.task),
                        "datatype": "BYTES",
                        "shape": [-1],
                    }
                ],
                "outputs": contract.outputs_metadata(self.spec),
                # provenance, so a remote load generator can label its rows honestly
                "parameters": {k: v for k, v in self.engine.info.items() if k != "parity"}
                | {
                    "engine": self.engine.config.engine,
                    "precision": self.engine.config.precision,
                    "parity_metric": (self.engine.info.get("parity") or {}).get("metric"),
                },
            }
        )

    async def model_ready(self, request):
        from aiohttp import web

        self._model(request)
        return web.json_response({"name": self.name, "ready": True})

    async def kserve_infer(self, request):
        from aiohttp import web

        self._model(request)
        body = await request.read()
        name = contract.input_name(self.spec.task)
        try:
            req, values = parse_request(body, request.headers.get(HEADER), (contract.IMAGE,))
        except ProtocolError as e:
            raise HttpError(400, str(e)) from None
        spec_in = next((t for t in req["inputs"] if t.get("name") == name), None)
        if spec_in is None:
            raise HttpError(400, f"missing input {name!r}; inputs are {list(values)}")
        if spec_in["datatype"] != "BYTES":
            raise HttpError(400, f"input {name!r} must be BYTES, got {spec_in['datatype']}")
        shape = spec_in["shape"]
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise HttpError(400, f"input {name!r} must have shape [n] or [n, 1], got {shape}")
        if self._vision:
            pred = await self._predict(await self._decode_images(list(values[name])))
        else:
            texts = self._check_texts(
                [str(v) if not isinstance(v, str) else v for v in values[name]]
            )
            pred = await self._predict(texts)
        if self._vision:
            outputs = {
                contract.EMBEDDINGS: ("FP32", pred.values),
                contract.NUM_VECTORS: ("INT64", np.asarray(pred.lengths, dtype=np.int64)),
            }
        elif self.spec.task == "classification":
            outputs = {
                contract.PROBABILITIES: ("FP32", pred.values),
                contract.LABELS: ("BYTES", pred.labels),
            }
        else:
            outputs = {contract.EMBEDDINGS: ("FP32", pred.values)}
        try:
            payload, header_len = build_response(req, self.name, outputs)
        except ProtocolError as e:
            raise HttpError(400, str(e)) from None
        headers = {HEADER: str(header_len)} if header_len is not None else {}
        ctype = "application/octet-stream" if header_len is not None else "application/json"
        return web.Response(body=payload, headers=headers, content_type=ctype)

    # ---------------------------------------------------------------- OpenAI / Infinity
    async def openai_embeddings(self, request):
        from aiohttp import web

        if self.spec.task == "classification":
            raise HttpError(400, f"{self.name} is a classifier; use /classify")
        body = await self._json(request)
        if not isinstance(body, dict) or "input" not in body:
            raise HttpError(400, "body must be a JSON object with 'input'")
        modality = body.get("modality", "image" if self._vision else "text")
        if modality not in ("text", "image"):
            raise HttpError(400, f"modality must be 'text' or 'image'; got {modality!r}")
        if (modality == "image") != self._vision:
            kind = "images" if self._vision else "text"
            raise HttpError(400, f"{self.name} embeds {kind}; got modality {modality!r}")
        if self._vision:  # Infinity's image input: base64 data URIs (one string or a list)
            items = body["input"] if isinstance(body["input"], list) else [body["input"]]
            pred = await self._predict(await self._decode_images(items))
            # one list of 128-d vectors per image, as Infinity returns multi-vector embeddings
            rows = [v[:n].tolist() for v, n in zip(pred.values, pred.lengths, strict=True)]
        else:
            texts = self._check_texts(body["input"])
            pred = await self._predict(texts)
            rows = [v.tolist() for v in pred.values]
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(rows)]
        return web.json_response({"object": "list", "data": data, "model": self.name})

    async def infinity_embeddings_image(self, request):
        """Infinity's older image route: {"model", "input": [data URI, ...]}."""
        if not self._vision:
            raise HttpError(400, f"{self.name} embeds text; use /v1/embeddings")
        return await self.openai_embeddings(request)

    async def classify(self, request):
        from aiohttp import web

        if self.spec.task != "classification":
            raise HttpError(400, f"{self.name} is an embedding model; use /v1/embeddings")
        body = await self._json(request)
        if not isinstance(body, dict) or "input" not in body:
            raise HttpError(400, "body must be a JSON object with 'input'")
        texts = self._check_texts(body["input"])
        pred = await self._predict(texts)
        labels = self.spec.labels
        data = [
            sorted(
                ({"label": labels[j], "score": float(p[j])} for j in range(len(labels))),
                key=lambda d: -d["score"],
            )
            for p in np.asarray(pred.values)
        ]
        return web.json_response({"object": "classify", "data": data, "model": self.name})

    # ---------------------------------------------------------------- metrics
    async def prometheus(self, request):
        from aiohttp import web

        text = exposition(self.batcher.stats(), self.metrics)
        return web.Response(text=text, content_type="text/plain")
