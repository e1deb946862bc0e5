"""KServe v2 / Triton HTTP codec, including Triton's binary tensor data extension."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from serving.schemas import InferRequest, SchemaError, load_json, validate

HEADER = "Inference-Header-Content-Length"
_NP = {
    "FP32": np.float32,
    "FP16": np.float16,
    "FP64": np.float64,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}


class ProtocolError(ValueError):
    """A malformed request; the message is the one-line reason returned with a 400."""


def _decode_bytes(raw: bytes, count: int, as_text: bool = True) -> list[str] | list[bytes]:
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(raw):
            raise ProtocolError("BYTES tensor data is shorter than its shape says")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        item = raw[pos : pos + n]
        if as_text:
            try:
                item = item.decode("utf-8", errors="strict")
            except UnicodeDecodeError as e:
                raise ProtocolError(f"BYTES element is not UTF-8 text: {e.reason}") from None
        out.append(item)
        pos += n
    if pos != len(raw):
        raise ProtocolError("BYTES tensor data is longer than its shape says")
    return out


def encode_bytes(items: list[str]) -> bytes:
    parts = []
    for s in items:
        b = s.encode("utf-8")
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)


def parse_request(
    body: bytes, header_length: str | None, raw_bytes: tuple[str, ...] = ()
) -> tuple[dict, dict[str, Any]]:
    """Split JSON header and binary tensors; return (request json, {input name: values}).

    BYTES inputs named in `raw_bytes` (images) keep their binary elements as bytes.
    """
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ProtocolError(
                f"{HEADER} must be an integer; got {header_length[:40]!r}"
            ) from None
        if not 0 <= n <= len(body):
            raise ProtocolError(f"{HEADER} {n} is outside the body ({len(body)} bytes)")
        head, binary = body[:n], body[n:]
    else:
        head, binary = body, b""
    try:
        req = load_json(head)
        validate(InferRequest, req)
    except SchemaError as e:
        raise ProtocolError(str(e)) from None
    values: dict[str, Any] = {}
    pos = 0
    for t in req["inputs"]:
        name, shape, dtype = t["name"], t["shape"], t["datatype"]
        count = math.prod(shape)
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = binary[pos : pos + size]
            if len(raw) != size:
                raise ProtocolError(f"input {name!r}: binary data is truncated")
            pos += size
            values[name] = _binary_tensor(name, raw, shape, count, dtype, name not in raw_bytes)
        else:
            data = t.get("data")
            if not isinstance(data, list):
                raise ProtocolError(f"input {name!r} has no 'data' list")
            flat = _flatten(data)
            if len(flat) != count:
                raise ProtocolError(
                    f"input {name!r}: {len(flat)} values do not match shape {shape}"
                )
            if dtype == "BYTES":
                bad = next((v for v in flat if not isinstance(v, str)), _NONE)
                if bad is not _NONE:
                    raise ProtocolError(
                        f"input {name!r}: BYTES elements must be strings; got {_kind(bad)}"
                    )
            values[name] = flat
    return req, values


_NONE = object()


def _kind(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _binary_tensor(name: str, raw: bytes, shape: list, count: int, dtype: str, as_text: bool):
    if dtype == "BYTES":
        return _decode_bytes(raw, count, as_text)
    if dtype not in _NP:
        raise ProtocolError(f"input {name!r}: unsupported datatype {dtype[:40]!r}")
    width = np.dtype(_NP[dtype]).itemsize
    if len(raw) != count * width:
        raise ProtocolError(
            f"input {name!r}: {len(raw)} bytes of {dtype} do not fill shape {shape} "
            f"({count * width} bytes)"
        )
    return np.frombuffer(raw, dtype=_NP[dtype]).reshape(shape)


def _flatten(data: list, max_depth: int = 32) -> list:
    """The leaves of nested lists, iteratively; deeper nesting than any tensor is refused."""
    out: list = []
    stack = [(iter(data), 1)]
    while stack:
        it, depth = stack[-1]
        for v in it:
            if isinstance(v, list):
                if depth >= max_depth:
                    raise ProtocolError(f"tensor data nests deeper than {max_depth} levels")
                stack.append((iter(v), depth + 1))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def wants_binary(req: dict, output: str) -> bool:
    for o in req.get("outputs") or []:
        if isinstance(o, dict) and o.get("name") == output:
            p = o.get("parameters") or {}
            if "binary_data" in p:
                return bool(p["binary_data"])
    return bool((req.get("parameters") or {}).get("binary_data_output", False))


def requested(req: dict, available: list[str]) -> list[str]:
    names = [o.get("name") for o in req.get("outputs") or [] if isinstance(o, dict)]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ProtocolError(f"unknown output {unknown[0]!r}; this model has {available}")
    return names or available


def build_response(
    req: dict, model: str, outputs: dict[str, tuple[str, Any]]
) -> tuple[bytes, int | None]:
    """outputs: name -> (datatype, array or list of str). Returns (body, header length or None)."""
    items, blobs = [], []
    for name in requested(req, list(outputs)):
        dtype, value = outputs[name]
        if dtype == "BYTES":
            shape = [len(value)]
        else:
            value = np.ascontiguousarray(value, dtype=_NP[dtype])
            shape = list(value.shape)
        item: dict[str, Any] = {"name": name, "datatype": dtype, "shape": shape}
        if wants_binary(req, name):
            blob = encode_bytes(value) if dtype == "BYTES" else value.tobytes()
            item["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            item["data"] = list(value) if dtype == "BYTES" else value.reshape(-1).tolist()
        items.append(item)
    head: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": items}
    if "id" in req:
        head["id"] = req["id"]
    text = json.dumps(head).encode()
    if blobs:
        return text + b"".join(blobs), len(text)
    return text, None
