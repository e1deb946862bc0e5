"""KServe v2 / Triton HTTP codec, including Triton's binary tensor data extension."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

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
    try:
        if header_length is not None:
            n = int(header_length)
            if not 0 <= n <= len(body):
                raise ProtocolError(f"{HEADER} {n} is outside the body ({len(body)} bytes)")
            req, binary = json.loads(body[:n]), body[n:]
        else:
            req, binary = json.loads(body), b""
    except (ValueError, UnicodeDecodeError) as e:
        if isinstance(e, ProtocolError):
            raise
        raise ProtocolError(f"malformed JSON: {str(e).splitlines()[0]}") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or not req["inputs"]:
        raise ProtocolError("request must be a JSON object with a non-empty 'inputs' list")
    values: dict[str, Any] = {}
    pos = 0
    for t in req["inputs"]:
        if not isinstance(t, dict) or not {"name", "shape", "datatype"} <= set(t):
            raise ProtocolError("each input needs 'name', 'shape' and 'datatype'")
        shape = t["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ProtocolError(f"input {t['name']!r}: shape must be a list of integers >= 0")
        count = int(np.prod(shape)) if shape else 1
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = binary[pos : pos + int(size)]
            if len(raw) != int(size):
                raise ProtocolError(f"input {t['name']!r}: binary data is truncated")
            pos += int(size)
            if t["datatype"] == "BYTES":
                values[t["name"]] = _decode_bytes(raw, count, t["name"] not in raw_bytes)
            elif t["datatype"] in _NP:
                values[t["name"]] = np.frombuffer(raw, dtype=_NP[t["datatype"]]).reshape(shape)
            else:
                raise ProtocolError(f"input {t['name']!r}: unsupported datatype {t['datatype']}")
        else:
            data = t.get("data")
            if not isinstance(data, list):
                raise ProtocolError(f"input {t['name']!r} has no 'data' list")
            flat = list(_flatten(data))
            if len(flat) != count:
                raise ProtocolError(
                    f"input {t['name']!r}: {len(flat)} values do not match shape {shape}"
                )
            values[t["name"]] = flat
    return req, values


def _flatten(x):
    for v in x:
        if isinstance(v, list):
            yield from _flatten(v)
        else:
            yield v


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
