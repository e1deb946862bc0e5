"""The wire contract: which tensors each task takes and returns, named once for every module.

Servers (ours, Triton repositories), clients (load generator, tritonclient engine, perf_analyzer)
and exporters all import these names; none spells them out itself.
"""

from __future__ import annotations

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
