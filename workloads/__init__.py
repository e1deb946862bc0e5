"""Workloads: the inputs a benchmark sends, with their token (and, for images, pixel) counts.

`text` builds text workloads (synthetic, local files, Hub datasets), `images` image workloads
(synthetic pages, folders, Parquet, Hub); `base` holds what both share.
"""

from __future__ import annotations

from workloads.base import TASK_DEFAULTS, Workload, WorkloadSpec, parse_sizes
from workloads.images import load_image_workload, prompt_tokens, workload_buckets
from workloads.text import load_text_workload

__all__ = [
    "TASK_DEFAULTS",
    "Workload",
    "WorkloadSpec",
    "load_workload",
    "parse_sizes",
    "prompt_tokens",
    "workload_buckets",
]


def load_workload(spec: WorkloadSpec, tokenizer, max_len: int) -> Workload:
    """`tokenizer` is the model's processor for vision models."""
    if spec.task == "vision-embedding":
        return load_image_workload(spec, tokenizer)
    return load_text_workload(spec, tokenizer, max_len)
