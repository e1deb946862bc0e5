"""KServe v2 over gRPC, with the protobuf and service definitions that tritonclient ships.

Health, metadata, model configuration, statistics, repository index and ModelInfer with raw
tensor contents (BYTES as 4-byte little-endian length-prefixed elements, as Triton sends them).
Every request goes through the same codec and batcher as HTTP; a refused one gets a gRPC status
code with the same one-line reason HTTP gives. grpcio comes with `tritonclient[grpc]` (the
`triton` extra) and is imported only when a gRPC port is asked for.
"""

from __future__ import annotations

import logging
import struct
import time
from typing import Any

import numpy as np

from core import contract
from core.errors import MissingDependency
from serving.codecs import HttpError
from serving.kserve import encode_bytes
from serving.triton_api import EXTENSIONS, input_metadata, repository_index

log = logging.getLogger(__name__)

_NP = {"FP32": np.float32, "INT64": np.int64}


class GrpcPortBusy(OSError):
    """The gRPC port cannot be bound; the message names it and the flag to change."""


def _modules():
    try:
        import grpc
        from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
    except ImportError as e:
        raise MissingDependency("tritonclient[grpc] (grpcio)", "triton") from e
    return grpc, service_pb2, service_pb2_grpc, model_config_pb2


def status_code(http_status: int):
    """The gRPC status of an HTTP status our handlers raise."""
    import grpc

    return {
        400: grpc.StatusCode.INVALID_ARGUMENT,
        404: grpc.StatusCode.NOT_FOUND,
        413: grpc.StatusCode.INVALID_ARGUMENT,
        415: grpc.StatusCode.INVALID_ARGUMENT,
        429: grpc.StatusCode.RESOURCE_EXHAUSTED,
        503: grpc.StatusCode.UNAVAILABLE,
    }.get(http_status, grpc.StatusCode.INTERNAL)


def decode_bytes(raw: bytes, count: int, as_text: bool) -> list:
    """`count` length-prefixed BYTES elements; HttpError(400) when the sizes do not add up."""
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(raw):
            raise HttpError(400, "BYTES tensor data is shorter than its shape says")
        (n,) = struct.unpack_from("<I", raw, pos)
        item = raw[pos + 4 : pos + 4 + n]
        pos += 4 + n
        out.append(item)
    if pos != len(raw):
        raise HttpError(400, "BYTES tensor data is longer than its shape says")
    return [_text(x) for x in out] if as_text else out


def _text(item: bytes) -> str:
    try:
        return item.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise HttpError(400, f"BYTES element is not UTF-8 text: {e.reason}") from None


def build_servicer(server: Any):
    """A GRPCInferenceService servicer over `server` (a serving.server.Server)."""
    grpc, pb, pb_grpc, mc_pb = _modules()
    from google.protobuf import json_format

    class Servicer(pb_grpc.GRPCInferenceServiceServicer):
        async def _check_model(self, name: str, context) -> None:
            if name != server.name:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"unknown model {name!r}; this server has {server.name!r}",
                )

        async def ServerLive(self, request, context):
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request, context):
            return pb.ServerReadyResponse(ready=True)

        async def ModelReady(self, request, context):
            return pb.ModelReadyResponse(ready=request.name == server.name)

        async def ServerMetadata(self, request, context):
            return pb.ServerMetadataResponse(
                name="billionbench",
                version="0.1.0",
                extensions=list(EXTENSIONS),
            )

        async def ModelMetadata(self, request, context):
            await self._check_model(request.name, context)
            return pb.ModelMetadataResponse(
                name=server.name,
                versions=["1"],
                platform=f"billionbench_{server.engine.config.engine}",
                inputs=[pb.ModelMetadataResponse.TensorMetadata(**input_metadata(server.spec))],
                outputs=[
                    pb.ModelMetadataResponse.TensorMetadata(**o)
                    for o in contract.outputs_metadata(server.spec)
                ],
            )

        async def ModelConfig(self, request, context):
            await self._check_model(request.name, context)
            config = json_format.ParseDict(server.config_json(), mc_pb.ModelConfig())
            return pb.ModelConfigResponse(config=config)

        async def ModelStatistics(self, request, context):
            if request.name:
                await self._check_model(request.name, context)
            return json_format.ParseDict(server.stats_json(), pb.ModelStatisticsResponse())

        async def RepositoryIndex(self, request, context):
            models = [
                pb.RepositoryIndexResponse.ModelIndex(**m) for m in repository_index(server.name)
            ]
            return pb.RepositoryIndexResponse(models=models)

        async def ModelInfer(self, request, context):
            t0 = time.perf_counter_ns()
            try:
                response, input_ns, output_ns = await infer(server, pb, request)
            except HttpError as e:
                server.times.add(False, time.perf_counter_ns() - t0)
                await context.abort(status_code(e.status), e.reason)
            server.times.add(True, time.perf_counter_ns() - t0, input_ns, output_ns)
            return response

    return Servicer()


def _inputs(server: Any, request) -> list:
    """The elements of the request's one input tensor (raw contents or typed contents)."""
    name = server.codec.input_name
    if request.model_name != server.name:
        raise HttpError(
            404, f"unknown model {request.model_name!r}; this server has {server.name!r}"
        )
    index = next((i for i, t in enumerate(request.inputs) if t.name == name), None)
    if index is None:
        raise HttpError(
            400, f"missing input {name!r}; inputs are {[t.name for t in request.inputs]}"
        )
    tensor = request.inputs[index]
    if tensor.datatype != "BYTES":
        raise HttpError(400, f"input {name!r} must be BYTES, got {tensor.datatype}")
    shape = list(tensor.shape)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or min(shape) < 0:
        raise HttpError(400, f"input {name!r} must have shape [n] or [n, 1], got {shape}")
    count = int(np.prod(shape))
    as_text = name != contract.IMAGE
    if request.raw_input_contents:
        if len(request.raw_input_contents) != len(request.inputs):
            raise HttpError(400, "raw_input_contents must have one entry per input")
        return decode_bytes(request.raw_input_contents[index], count, as_text)
    items = list(tensor.contents.bytes_contents)
    if len(items) != count:
        raise HttpError(400, f"input {name!r}: {len(items)} values do not match shape {shape}")
    return [_text(x) for x in items] if as_text else items


async def infer(server: Any, pb, request) -> tuple[Any, int, int]:
    """(ModelInferResponse, input ns, output ns) for one ModelInferRequest; HttpError if refused."""
    t0 = time.perf_counter_ns()
    inputs = await server.codec.kserve_inputs(_inputs(server, request))
    input_ns = time.perf_counter_ns() - t0
    pred = await server.predict(inputs)
    t1 = time.perf_counter_ns()
    outputs = server.codec.kserve_outputs(pred)
    names = [o.name for o in request.outputs] or list(outputs)
    unknown = [n for n in names if n not in outputs]
    if unknown:
        raise HttpError(400, f"unknown output {unknown[0]!r}; this model has {list(outputs)}")
    response = pb.ModelInferResponse(model_name=server.name, model_version="1", id=request.id)
    for n in names:
        dtype, value = outputs[n]
        if dtype == "BYTES":
            shape, blob = [len(value)], encode_bytes(list(value))
        else:
            arr = np.ascontiguousarray(value, dtype=_NP[dtype])
            shape, blob = list(arr.shape), arr.tobytes()
        response.outputs.add(name=n, datatype=dtype, shape=shape)
        response.raw_output_contents.append(blob)
    return response, input_ns, time.perf_counter_ns() - t1


async def start_grpc(server: Any, host: str, port: int):
    """Start the gRPC service on host:port in the running event loop; returns the grpc.aio server."""
    grpc, _, pb_grpc, _ = _modules()
    limit = server.limits.max_body_bytes
    aio = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", max(limit, 64 * 2**20)),
            ("grpc.so_reuseport", 0),  # a taken port is an error, not a second listener
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(build_servicer(server), aio)
    try:  # grpcio returns 0 or raises RuntimeError, by version, when the port is taken
        bound = aio.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise GrpcPortBusy(f"cannot listen on {host}:{port} for gRPC; pick another --grpc-port")
    await aio.start()
    log.info("gRPC (KServe v2) on %s:%d", host, bound)
    return aio


__all__ = ["GrpcPortBusy", "build_servicer", "decode_bytes", "infer", "start_grpc", "status_code"]
