"""Triton's model configuration, statistics and repository index, as Triton writes them.

NVIDIA's tools (perf_analyzer, Model Analyzer, tritonclient's helpers) read these before they
send a request. HTTP returns the dicts as JSON; gRPC parses the same dicts into tritonclient's
protobuf messages, so both transports describe the model identically.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from core import contract

# what the server metadata announces; perf_analyzer reads server-side stats only when
# "statistics" is listed
EXTENSIONS = ("binary_tensor_data", "model_configuration", "model_repository", "statistics")

# KServe v2 datatype -> Triton's model-config data_type
_CONFIG_TYPE = {"BYTES": "TYPE_STRING", "FP32": "TYPE_FP32", "INT64": "TYPE_INT64"}


def _tensor(name: str, datatype: str, dims: list[int]) -> dict[str, Any]:
    """One config tensor; a per-row scalar is dims [1] reshaped to [] (Triton's idiom)."""
    t: dict[str, Any] = {"name": name, "data_type": _CONFIG_TYPE[datatype], "dims": dims or [1]}
    if not dims:
        t["reshape"] = {"shape": []}
    return t


def input_metadata(spec: Any) -> dict[str, Any]:
    """KServe v2 metadata of the request tensor: [-1, 1], as for Triton's batched models.

    perf_analyzer takes the shape after the batch dimension from here ([1]); the server
    accepts [n] as well.
    """
    return {"name": contract.input_name(spec.task), "datatype": "BYTES", "shape": [-1, 1]}


def model_config(
    spec: Any,
    *,
    max_batch_size: int,
    queue_delay_ms: float,
    device: str,
    parameters: dict[str, Any],
) -> dict[str, Any]:
    """The JSON `GET /v2/models/{m}/config` returns: one batched model, TEXT (or IMAGE) in.

    `max_batch_size` is the most inputs one request may carry, so a client sends TEXT as
    [b, 1]; the server also takes [b]. Output dims leave out the batch dimension.
    """
    outputs = [
        _tensor(o["name"], o["datatype"], list(o["shape"][1:]))
        for o in contract.outputs_metadata(spec)
    ]
    return {
        "name": spec.name,
        "platform": "",
        "backend": "billionbench",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": int(max_batch_size),
        "input": [
            {
                "name": contract.input_name(spec.task),
                "data_type": "TYPE_STRING",
                "format": "FORMAT_NONE",
                "dims": [1],
            }
        ],
        "output": outputs,
        "dynamic_batching": {
            "preferred_batch_size": [],
            "max_queue_delay_microseconds": int(round(queue_delay_ms * 1000)),
        },
        "instance_group": [
            {
                "name": spec.name,
                "kind": "KIND_GPU" if device.startswith("cuda") else "KIND_CPU",
                "count": 1,
            }
        ],
        "parameters": {k: {"string_value": str(v)} for k, v in parameters.items() if v is not None},
    }


class RequestTimes:
    """Cumulative per-request times the KServe handlers record (HTTP and gRPC alike).

    success / fail: the whole request; compute_input (decode and check the inputs) and
    compute_output (encode the answer): gRPC only. Queue and forward come from the batcher.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.success = [0, 0]  # count, ns
        self.fail = [0, 0]
        self.compute_input = [0, 0]
        self.compute_output = [0, 0]
        self.last_ms = 0

    def add(self, ok: bool, total_ns: int, input_ns: int = 0, output_ns: int = 0) -> None:
        with self._lock:
            slot = self.success if ok else self.fail
            slot[0] += 1
            slot[1] += total_ns
            if ok:
                self.compute_input[0] += 1
                self.compute_input[1] += input_ns
                self.compute_output[0] += 1
                self.compute_output[1] += output_ns
            self.last_ms = int(time.time() * 1000)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "success": tuple(self.success),
                "fail": tuple(self.fail),
                "compute_input": tuple(self.compute_input),
                "compute_output": tuple(self.compute_output),
                "last_ms": self.last_ms,
            }


def _duration(count: int, ns: int) -> dict[str, int]:
    return {"count": int(count), "ns": int(ns)}


def model_statistics(name: str, times: RequestTimes, batcher_stats: Any) -> dict[str, Any]:
    """The statistics extension's JSON for one model (`GET /v2/models/{m}/stats`).

    Every phase counts successful requests, as perf_analyzer requires: queue is each request's
    wait for a batch, compute_infer the forward pass of that batch (Triton's meaning);
    compute_input and compute_output are timed by the handler (gRPC only; 0 ns over HTTP).
    """
    t = times.snapshot()
    b = batcher_stats
    n = t["success"][0]
    return {
        "model_stats": [
            {
                "name": name,
                "version": "1",
                "last_inference": t["last_ms"],
                "inference_count": int(b.inputs),
                "execution_count": int(b.batches),
                "inference_stats": {
                    "success": _duration(*t["success"]),
                    "fail": _duration(*t["fail"]),
                    "queue": _duration(n, b.request_queue_ns_total),
                    "compute_input": _duration(n, t["compute_input"][1]),
                    "compute_infer": _duration(n, b.request_forward_ns_total),
                    "compute_output": _duration(n, t["compute_output"][1]),
                    "cache_hit": _duration(0, 0),
                    "cache_miss": _duration(0, 0),
                },
                "batch_stats": [],
                "memory_usage": [],
            }
        ]
    }


def repository_index(name: str) -> list[dict[str, str]]:
    """`POST /v2/repository/index`: the one model this server serves, loaded and ready."""
    return [{"name": name, "version": "1", "state": "READY", "reason": ""}]
