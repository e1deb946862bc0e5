"""KServe v2 over gRPC for the load generator: the ModelInfer message, its answer, the channel.

Requests are serialised once by the adapter and sent as bytes on a `grpc.aio` channel (no
per-call message building in the timed path), answers come back as bytes and are parsed when
judged. grpcio and the message definitions come from tritonclient[grpc] (the `triton` extra).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import numpy as np

from core.errors import MissingDependency

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
_NP = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64,
       "INT32": np.int32}  # fmt: skip


def _service_pb2():
    try:
        from tritonclient.grpc import service_pb2
    except ImportError as e:
        raise MissingDependency("tritonclient[grpc] (grpcio)", "triton") from e
    return service_pb2


def address(url: str) -> str:
    """host:port of a gRPC target URL (grpc://host:port or host:port)."""
    return url.split("://", 1)[-1].rstrip("/")


def infer_request(model: str, input_name: str, items: list) -> bytes:
    """A serialised ModelInferRequest: one BYTES input [n] in raw_input_contents."""
    pb = _service_pb2()
    raw = b"".join(
        struct.pack("<I", len(b)) + b
        for b in (x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in items)
    )
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name=input_name, datatype="BYTES", shape=[len(items)])
    req.raw_input_contents.append(raw)
    return req.SerializeToString()


def _bytes_elements(raw: bytes) -> list[str]:
    out, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack_from("<I", raw, pos)
        out.append(raw[pos + 4 : pos + 4 + n].decode("utf-8", "replace"))
        pos += 4 + n
    return out


def parse_response(payload: bytes) -> dict[str, tuple[str, Any]]:
    """name -> (datatype, ndarray, or list of str for BYTES) of a serialised ModelInferResponse."""
    from google.protobuf.message import DecodeError

    pb = _service_pb2()
    try:
        resp = pb.ModelInferResponse.FromString(payload)
    except DecodeError as e:
        raise ValueError(f"not a ModelInferResponse: {e}") from None
    if len(resp.raw_output_contents) != len(resp.outputs):
        raise ValueError("the answer has no raw_output_contents for every output")
    out: dict[str, tuple[str, Any]] = {}
    for tensor, raw in zip(resp.outputs, resp.raw_output_contents, strict=True):
        if tensor.datatype == "BYTES":
            out[tensor.name] = ("BYTES", _bytes_elements(raw))
            continue
        if tensor.datatype not in _NP:
            raise ValueError(f"output {tensor.name!r} has unsupported datatype {tensor.datatype}")
        arr = np.frombuffer(raw, dtype=_NP[tensor.datatype]).reshape(list(tensor.shape))
        out[tensor.name] = (tensor.datatype, arr)
    return out


# gRPC status -> the HTTP status the client's failure kinds are counted by
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501,
}


class GrpcSession:
    """One gRPC channel for a run (HTTP/2 multiplexes the VUs' calls), sending raw bytes."""

    def __init__(self, url: str, timeout_s: float, metadata: tuple[tuple[str, str], ...] = ()):
        self.url = url
        self.timeout_s = timeout_s
        self.metadata = metadata or None
        self._channel = None
        self._call = None

    async def __aenter__(self) -> GrpcSession:
        try:
            import grpc
        except ImportError as e:
            raise MissingDependency("grpcio", "triton") from e
        self._grpc = grpc
        self._channel = grpc.aio.insecure_channel(
            address(self.url),
            options=[
                ("grpc.max_receive_message_length", 256 * 2**20),
                ("grpc.max_send_message_length", 256 * 2**20),
            ],
        )
        # no (de)serializers: the adapter's bytes go out as they are
        self._call = self._channel.unary_unary(MODEL_INFER)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def call(self, data: bytes) -> tuple[int, bytes]:
        """(HTTP-equivalent status, payload); a timeout raises asyncio.TimeoutError and an
        unreachable server ConnectionError, as the HTTP client's errors do."""
        grpc = self._grpc
        try:
            payload = await self._call(data, timeout=self.timeout_s, metadata=self.metadata)
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise asyncio.TimeoutError from None
            if code == grpc.StatusCode.UNAVAILABLE:
                raise ConnectionError(f"gRPC UNAVAILABLE: {e.details()}") from None
            status = _HTTP_STATUS.get(code.name, 500)
            return status, f"gRPC {code.name}: {e.details()}".encode()
        return 200, payload


__all__ = ["MODEL_INFER", "GrpcSession", "address", "infer_request", "parse_response"]
