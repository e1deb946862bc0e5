"""The wire contract: which tensors each task takes and returns, named once for every module.

Servers (ours, Triton repositories), clients (load generator, tritonclient engine, perf_analyzer)
and exporters all import these names; none spells them out itself.
"""

from __future__ import annotations

import base64
from typing import Any

# what a client sends
TEXT = "TEXT"  # BYTES, one UTF-8 text per row
IMAGE = "IMAGE"  # BYTES: raw image files (binary extension) or base64 strings (JSON)
# what a server answers
EMBEDDINGS = "embeddings"  # FP32 [n, dim], or [n, max_vectors, dim] zero-padded (multi-vector)
NUM_VECTORS = "num_vectors"  # INT64 [n]: the real vector count of each multi-vector row
PROBABILITIES = "probabilities"  # FP32 [n, num_labels]
LABELS = "labels"  # BYTES [n]: the top label per row
# what a model graph takes and returns (ONNX, TensorRT, TorchScript, the Triton encoder)
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TEXT_MODEL_INPUTS = (INPUT_IDS, ATTENTION_MASK)
VISION_MODEL_INPUTS = (INPUT_IDS, ATTENTION_MASK, "pixel_values", "image_grid_thw")
LOGITS = "logits"
LAST_HIDDEN_STATE = "last_hidden_state"


def input_name(task: str) -> str:
    """The one request tensor of a task."""
    return IMAGE if task == "vision-embedding" else TEXT


def output_names(task: str) -> tuple[str, ...]:
    """The response tensors of a task, main output first."""
    if task == "classification":
        return (PROBABILITIES, LABELS)
    if task == "vision-embedding":
        return (EMBEDDINGS, NUM_VECTORS)
    return (EMBEDDINGS,)


def model_output(task: str) -> str:
    """The raw output of a text model graph, before pooling or softmax."""
    return LOGITS if task == "classification" else LAST_HIDDEN_STATE


def outputs_metadata(spec: Any) -> list[dict[str, Any]]:
    """KServe v2 metadata of a model's outputs (name, datatype, shape; -1 = variable)."""
    if spec.task == "vision-embedding":
        return [
            {"name": EMBEDDINGS, "datatype": "FP32", "shape": [-1, -1, spec.dim]},
            {"name": NUM_VECTORS, "datatype": "INT64", "shape": [-1]},
        ]
    if spec.task == "classification":
        return [
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, spec.num_labels]},
            {"name": LABELS, "datatype": "BYTES", "shape": [-1]},
        ]
    return [{"name": EMBEDDINGS, "datatype": "FP32", "shape": [-1, spec.dim]}]


def data_uri(raw: bytes, mime: str = "image/png") -> str:
    """An image's bytes as the data URI the JSON routes take."""
    return f"data:{mime};base64," + base64.b64encode(raw).decode("ascii")


# /metrics: the names a scraper reads back (harness.sweep's padding and CPU columns), one
# spelling each, for our server (serving.metrics) and the scraper (loadgen.endpoint).
# prometheus_client adds `_total` to a counter's samples: `total()` gives that sample's name.
USEFUL_TOKENS = "bb_useful_tokens"
PADDED_TOKENS = "bb_padded_tokens"
FORWARD_CPU_SECONDS = "bb_forward_cpu_seconds"
NONFORWARD_CPU_SECONDS = "bb_nonforward_cpu_seconds"


def total(counter: str) -> str:
    """The sample name of a counter in the text exposition."""
    return f"{counter}_total"
