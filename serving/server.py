"""HTTP server over the dynamic batcher: KServe v2 / Triton, OpenAI `/v1/embeddings`,
Infinity-style `/classify`, and Prometheus `/metrics`.

Every bad request gets a 4xx with a one-line reason and the server keeps serving; a full queue
answers 429 with Retry-After, never a silent drop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

from core import contract
from core.config import arg, at_least
from core.errors import BillionbenchError, ConfigError
from engines.base import Engine
from engines.pipeline import InputTooLong, Prediction
from serving import cpu
from serving.batcher import BatcherStopped, DynamicBatcher, QueueFull
from serving.codecs import HttpError, codec_for
from serving.kserve import HEADER, ProtocolError, build_response, parse_request
from serving.metrics import CONTENT_TYPE, HttpMetrics, exposition
from serving.schemas import ClassifyRequest, EmbeddingsRequest, SchemaError, load_json, validate
from serving.triton_api import (
    EXTENSIONS,
    RequestTimes,
    input_metadata,
    model_config,
    model_statistics,
    repository_index,
)

log = logging.getLogger(__name__)


def _megabytes(text: str) -> int:
    try:
        mb = float(text)
    except ValueError:
        raise ConfigError(f"--max-body-mb takes a number of megabytes; got {text!r}") from None
    return int(mb * 2**20)


# the routes: KServe v2 and Triton's extensions, OpenAI / Infinity, Prometheus; a {model}
# route answers under /v2/models/{name} and, as Triton's do, /v2/models/{name}/versions/{v}
_ROUTES = (
    ("GET", "/v2/health/ready", "ready"),
    ("GET", "/v2/health/live", "live"),
    ("GET", "/v2", "server_metadata"),
    ("GET", "/v2/models/stats", "triton_stats"),
    ("POST", "/v2/repository/index", "triton_index"),
    ("GET", "{model}", "model_metadata"),
    ("GET", "{model}/ready", "model_ready"),
    ("POST", "{model}/infer", "kserve_infer"),
    ("GET", "{model}/config", "triton_config"),
    ("GET", "{model}/stats", "triton_stats"),
    ("POST", "/v1/embeddings", "openai_embeddings"),
    ("POST", "/embeddings", "openai_embeddings"),
    ("POST", "/embeddings_image", "infinity_embeddings_image"),
    ("POST", "/classify", "classify"),
    ("GET", "/metrics", "prometheus"),
)
_MODEL_PATHS = ("/v2/models/{name}", "/v2/models/{name}/versions/{v}")


@dataclass(frozen=True)
class ServerLimits:
    """What one request may be, and how long and how many connections the server allows."""

    max_body_bytes: int = arg(
        8 * 2**20, flag="--max-body-mb", parse=_megabytes, display="8", help="request body cap (MB)"
    )
    max_text_chars: int = arg(100_000, help="per-input character cap")
    # TEI's default: an input over the model's length is an error (413), not silently cut
    truncate: bool = arg(
        False, help="cut inputs at the model's max length instead of answering 413"
    )
    body_timeout_s: float = arg(30.0, cli=False, help="a body not read by then is answered 408")
    max_connections: int = arg(1024, cli=False, help="connections beyond this get a 503")
    parse_inline_bytes: int = arg(
        64 * 2**10, cli=False, help="larger bodies are parsed off the event loop"
    )

    def __post_init__(self) -> None:
        at_least(self, 1, "max_body_bytes", "max_text_chars", "max_connections")


# 499: the client went away before its answer (nginx's code; logged quietly, never sent)
CLIENT_GONE = 499


class Server:
    """The request handlers; `app()` wires them into an aiohttp application."""

    def __init__(self, engine: Engine, batcher: DynamicBatcher, limits: ServerLimits | None = None):
        self.engine = engine
        self.batcher = batcher
        self.limits = limits or ServerLimits()
        self.spec = engine.spec
        self.name = engine.spec.name
        self.metrics = HttpMetrics()
        self.codec = codec_for(
            engine,
            max_inputs=batcher.config.max_request_inputs,
            max_text_chars=self.limits.max_text_chars,
        )

    # ---------------------------------------------------------------- plumbing
    def app(self):
        from aiohttp import web

        app = web.Application(
            client_max_size=self.limits.max_body_bytes, middlewares=[self._errors]
        )
        for method, path, handler in _ROUTES:
            for full in (
                [path.replace("{model}", m) for m in _MODEL_PATHS] if "{model}" in path else [path]
            ):
                app.router.add_route(method, full, getattr(self, handler))
        app.middlewares.append(self._infer_times)
        return app

    @property
    def _errors(self):
        from aiohttp import web

        @web.middleware
        async def errors(request, handler):
            t0 = time.perf_counter()
            status = 500
            try:
                if (request.content_length or 0) > self.limits.max_body_bytes:
                    # answered before the body is read: a client that declares 10 GB and
                    # sends 10 bytes must not hold the connection until the body timeout
                    status = 413
                    resp = web.json_response({"error": self._too_large()}, status=413)
                    resp.force_close()
                    return resp
                resp = await handler(request)
                status = resp.status
                return resp
            except HttpError as e:
                status = e.status
                resp = web.json_response({"error": e.reason}, status=e.status, headers=e.headers)
                return await _close_if_broken(request, resp)
            except web.HTTPException as e:  # 404/405/413 from aiohttp itself
                status = e.status
                resp = web.json_response(
                    {"error": self._http_reason(e)}, status=e.status, headers=_allow(e)
                )
                return await _close_if_broken(request, resp)
            except asyncio.CancelledError:  # the client went away: aiohttp cancelled us
                status = CLIENT_GONE
                raise
            except ConnectionError:
                # the client went away mid-body: nobody to answer, nothing worth a traceback
                status = CLIENT_GONE
                log.debug("client left before its answer: %s %s", request.method, request.path)
                return web.Response(status=400)
            except Exception as e:  # never take the server down; one line, an id to grep
                error_id = secrets.token_hex(4)
                log.error(
                    "request %s %s failed (error id %s): %s: %s",
                    request.method,
                    request.path[:200],
                    error_id,
                    type(e).__name__,
                    str(e).splitlines()[0][:200] if str(e) else "",
                )
                return web.json_response(
                    {"error": f"internal error (error id {error_id})"}, status=500
                )
            finally:
                self.metrics.observe(_route(request), status, time.perf_counter() - t0)

        return errors

    def _http_reason(self, e) -> str:
        return self._too_large() if e.status == 413 else e.reason

    def _too_large(self) -> str:
        return f"request body over {self.limits.max_body_bytes} bytes"

    async def _body(self, request) -> bytes:
        """The whole body, or a 4xx: too slow, not what Content-Encoding says, cut short."""
        from aiohttp import web
        from aiohttp.http_exceptions import HttpProcessingError
        from aiohttp.web_protocol import RequestPayloadError

        try:
            return await asyncio.wait_for(request.read(), self.limits.body_timeout_s)
        except asyncio.TimeoutError:
            raise HttpError(
                408, f"request body not received within {self.limits.body_timeout_s:g} s"
            ) from None
        except web.HTTPException:
            raise
        except (HttpProcessingError, RequestPayloadError) as e:
            # e.g. Content-Encoding: gzip on a body that is not gzip
            cause = e.__cause__ or e
            reason = getattr(cause, "message", None) or str(cause)
            raise HttpError(400, f"cannot read the body: {_line(reason)}") from None
        except ValueError as e:
            raise HttpError(400, f"cannot read the body: {_line(str(e))}") from None

    async def _parse(self, fn, *args):
        """fn(*args), off the event loop when the body is large (parsing 8 MB takes a while)."""
        if sum(len(a) for a in args if isinstance(a, bytes)) <= self.limits.parse_inline_bytes:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _json_input(self, request, schema) -> dict[str, Any]:
        """The JSON body of an OpenAI / Infinity request, checked against `schema`."""
        raw = await self._body(request)

        def parse(raw: bytes) -> dict[str, Any]:
            body = load_json(raw)
            if not isinstance(body, dict) or "input" not in body:
                raise SchemaError("body must be a JSON object with 'input'")
            validate(schema, body)
            return body

        try:
            return await self._parse(parse, raw)
        except SchemaError as e:
            raise HttpError(400, str(e)) from None

    async def _predict(self, inputs: list) -> Prediction:
        try:
            # tokenizes on the batcher's pool; a cancelled request (client gone) leaves the queue
            return await self.batcher.asubmit(inputs, truncate=self.limits.truncate)
        except BatcherStopped:
            raise HttpError(503, "the server is shutting down", {"Retry-After": "1"}) from None
        except QueueFull as e:
            retry = max(1, math.ceil(e.retry_after_s))
            raise HttpError(429, e.reason, {"Retry-After": str(retry)}) from None
        except InputTooLong as e:
            raise HttpError(413, str(e)) from None
        except BillionbenchError as e:
            raise HttpError(400, str(e)) from None
        except ValueError as e:
            raise HttpError(413, str(e)) from None

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
            {"name": "billionbench", "version": "0.1.0", "extensions": list(EXTENSIONS)}
        )

    async def model_metadata(self, request):
        from aiohttp import web

        self._model(request)
        return web.json_response(
            {
                "name": self.name,
                "versions": ["1"],
                "platform": f"billionbench_{self.engine.config.engine}",
                "inputs": [input_metadata(self.spec)],
                "outputs": contract.outputs_metadata(self.spec),
                # provenance, so a remote load generator can label its rows honestly
                "parameters": {k: v for k, v in self.engine.info.items() if k != "parity"}
                | {
                    "engine": self.engine.config.engine,
                    "precision": self.engine.config.precision,
                    "variant": self.engine.config.variant,
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
        body = await self._body(request)
        name = self.codec.input_name
        try:
            req, values = await self._parse(
                parse_request, body, request.headers.get(HEADER), (contract.IMAGE,)
            )
        except ProtocolError as e:
            raise HttpError(400, str(e)) from None
        spec_in = next((t for t in req["inputs"] if t.get("name") == name), None)
        if spec_in is None:
            raise HttpError(400, f"missing input {name!r}; inputs are {list(values)}")
        if spec_in["datatype"] != "BYTES":
            raise HttpError(400, f"input {name!r} must be BYTES, got {spec_in['datatype'][:40]!r}")
        shape = spec_in["shape"]
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise HttpError(400, f"input {name!r} must have shape [n] or [n, 1], got {shape}")
        pred = await self._predict(await self.codec.kserve_inputs(values[name]))
        try:
            payload, header_len = build_response(req, self.name, self.codec.kserve_outputs(pred))
        except ProtocolError as e:
            raise HttpError(400, str(e)) from None
        headers = {HEADER: str(header_len)} if header_len is not None else {}
        ctype = "application/octet-stream" if header_len is not None else "application/json"
        return web.Response(body=payload, headers=headers, content_type=ctype)

    # ---------------------------------------------------------------- OpenAI / Infinity
    async def openai_embeddings(self, request):
        from aiohttp import web

        self.codec.accept("embeddings")
        body = await self._json_input(request, EmbeddingsRequest)
        self.codec.check_modality(body.get("modality", self.codec.modality))
        pred = await self._predict(await self.codec.json_inputs(body["input"]))
        rows = self.codec.embeddings(pred)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(rows)]
        return web.json_response({"object": "list", "data": data, "model": self.name})

    async def infinity_embeddings_image(self, request):
        """Infinity's older image route: {"model", "input": [data URI, ...]}."""
        self.codec.accept("embeddings_image")
        return await self.openai_embeddings(request)

    async def classify(self, request):
        from aiohttp import web

        self.codec.accept("classify")
        body = await self._json_input(request, ClassifyRequest)
        pred = await self._predict(await self.codec.json_inputs(body["input"]))
        data = self.codec.classify(pred)
        return web.json_response({"object": "classify", "data": data, "model": self.name})

    # ---------------------------------------------------------------- Triton extensions
    # model configuration, statistics and repository index: what perf_analyzer and other
    # NVIDIA tools read before they send a request (serving/triton_api.py builds the JSON)
    @property
    def times(self) -> RequestTimes:
        if not hasattr(self, "_times"):
            self._times = RequestTimes()
        return self._times

    def config_json(self) -> dict[str, Any]:
        """This model's Triton configuration (HTTP and gRPC serve the same one)."""
        cfg = self.engine.config
        return model_config(
            self.spec,
            max_batch_size=self.batcher.config.max_request_inputs,
            queue_delay_ms=self.batcher.config.max_queue_delay_ms,
            device=str(getattr(cfg, "device", "cpu")),
            parameters={
                "engine": cfg.engine,
                "precision": cfg.precision,
                "weights": self.engine.info.get("weights"),
            },
        )

    async def predict(self, inputs: list) -> Prediction:
        """Checked inputs through the batcher (the gRPC service calls this too)."""
        return await self._predict(inputs)

    def stats_json(self) -> dict[str, Any]:
        return model_statistics(self.name, self.times, self.batcher.stats())

    async def triton_config(self, request):
        from aiohttp import web

        self._model(request)
        return web.json_response(self.config_json())

    async def triton_stats(self, request):
        from aiohttp import web

        if "name" in request.match_info:
            self._model(request)
        return web.json_response(self.stats_json())

    async def triton_index(self, request):
        from aiohttp import web

        return web.json_response(repository_index(self.name))

    @property
    def _infer_times(self):
        from aiohttp import web

        @web.middleware
        async def infer_times(request, handler):
            if not (request.method == "POST" and request.path.endswith("/infer")):
                return await handler(request)
            t0, ok = time.perf_counter_ns(), False
            try:
                resp = await handler(request)
                ok = resp.status < 400
                return resp
            finally:
                self.times.add(ok, time.perf_counter_ns() - t0)

        return infer_times

    # ---------------------------------------------------------------- metrics
    async def prometheus(self, request):
        from aiohttp import web

        text = exposition(self.batcher.stats, self.metrics)
        return web.Response(text=text, headers={"Content-Type": CONTENT_TYPE})

    # ---------------------------------------------------------------- running
    async def start(self, host: str, port: int):
        """Listen on host:port; returns the aiohttp runner (`await runner.cleanup()` stops it).

        A client that disconnects cancels its handler, so its queued inputs are dropped.
        """
        from aiohttp import web

        cpu.register_other()  # the event loop: HTTP, JSON, encoding
        runner = web.AppRunner(
            self.app(), handler_cancellation=True, access_log=None, logger=_OneLineLog()
        )
        await runner.setup()
        _cap_connections(runner.server, self.limits.max_connections)
        await web.TCPSite(runner, host, port).start()
        return runner


class _OneLineLog:
    """aiohttp's connection logger, minus the traceback it writes for every malformed request.

    Its errors are the client's (bad HTTP, a body that is not what Content-Encoding says).
    """

    def __init__(self) -> None:
        self.log = logging.getLogger("serving.server.http")

    def exception(self, msg: str, *args: Any, exc_info: Any = None, **kw: Any) -> None:
        why = f"{type(exc_info).__name__}: {_line(str(exc_info))}" if exc_info else ""
        self.log.warning("%s (%s)", msg % args if args else msg, why)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)


def _refusal() -> bytes:
    body = b'{"error": "too many open connections; retry later"}'
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Retry-After: 1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _cap_connections(http_server: Any, limit: int) -> None:
    """Answer connections beyond `limit` with one 503 and close them, before they read a byte."""
    made = http_server.connection_made
    refusal = _refusal()

    def connection_made(handler, transport) -> None:
        made(handler, transport)
        if len(http_server.connections) > limit:
            transport.write(refusal)
            transport.close()

    http_server.connection_made = connection_made


def _route(request) -> str:
    """The route template that matched (`/v2/models/{name}/infer`), or `unknown`."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unknown"


async def _close_if_broken(request, resp):
    """Send `resp` and close the connection when the body could not be read (not gzip, cut).

    aiohttp would otherwise read the rest of that body after answering, and log a traceback.
    """
    if request.content.exception() is None:
        return resp
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    request.protocol.force_close()
    return resp


def _allow(e) -> dict[str, str]:
    allow = e.headers.get("Allow")
    return {"Allow": allow} if allow else {}


def _line(text: str) -> str:
    return " ".join(str(text).split())[:200]


__all__ = ["HttpError", "Server", "ServerLimits"]
