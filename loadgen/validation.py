"""Output checks on a 2xx response: output count, shape, dimension, NaN/Inf, norm, labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loadgen.protocols import Parsed, Target

NORM_TOL = 1e-3


@dataclass
class Check:
    """What one response's outputs got wrong (the first reason kept) and how they scored."""

    invalid: int = 0
    reason: str | None = None
    nvec: list[int] = field(default_factory=list)
    correct: int = 0
    labelled: int = 0

    def fail(self, reason: str) -> None:
        self.invalid += 1
        self.reason = self.reason or reason


def _expected_label(lab: Any, labels: tuple[str, ...]) -> str:
    if isinstance(lab, (int, np.integer)) and labels and 0 <= lab < len(labels):
        return labels[lab]
    return str(lab)


def _embedding_problem(v: np.ndarray, target: Target) -> tuple[int, str | None]:
    """(number of vectors, what is wrong or None)."""
    if v.ndim not in (1, 2):
        return 0, f"output of shape {v.shape}"
    vecs = v[None] if v.ndim == 1 else v
    n = vecs.shape[0]
    if n == 0:
        return 0, "no vectors"
    if target.dim is not None and vecs.shape[1] != target.dim:
        return n, f"dimension {vecs.shape[1]} != expected {target.dim}"
    if not np.isfinite(vecs).all():
        return n, "NaN/Inf in output"
    if target.normalized:
        dev = np.abs(np.linalg.norm(vecs, axis=1) - 1.0)
        if dev.max() >= NORM_TOL:
            return n, f"norm off by {dev.max():.2g} (model normalises: expected 1 ± {NORM_TOL:g})"
    return n, None


def validate(parsed: Parsed, n: int, target: Target, expected: list | None) -> Check:
    c = Check()
    got = len(parsed.values)
    if got != n or (parsed.labels is not None and len(parsed.labels) != n):
        c.invalid, c.reason = n, f"{got} outputs for {n} inputs"
        return c
    for j, v in enumerate(parsed.values):
        if target.task != "classification":
            nvec, problem = _embedding_problem(v, target)
            c.nvec.append(nvec)
            if problem:
                c.fail(problem)
            continue
        p = np.asarray(v, dtype=np.float64)
        if p.ndim != 1 or p.size == 0:
            c.fail(f"probabilities of shape {p.shape}")
            continue
        if target.dim is not None and p.size != target.dim:
            c.fail(f"{p.size} probabilities != expected {target.dim}")
            continue
        if not np.isfinite(p).all():
            c.fail("NaN/Inf in probabilities")
            continue
        label = parsed.labels[j] if parsed.labels is not None else None
        if label is None and target.labels and p.size == len(target.labels):
            label = target.labels[int(np.argmax(p))]
        if target.labels and label not in target.labels:
            c.fail(f"unknown label {label!r}")
        if expected is not None and expected[j] is not None and label is not None:
            c.labelled += 1
            c.correct += int(label == _expected_label(expected[j], target.labels))
    return c
