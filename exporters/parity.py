"""The parity gate: an export is compared against eager fp32 before it may be benchmarked."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from engines.base import Engine, EngineConfig
from engines.registry import engine_class
from engines.textgen import texts_with_token_counts
from engines.vision import bucket_pixels, encode_png, synthetic_page
from exporters.base import PARITY_SHAPES


@dataclass(frozen=True)
class Thresholds:
    min_cosine: float  # embeddings
    max_dprob: float  # classification: max |p_export - p_eager|
    min_top1: float  # classification: agreement on inputs the reference decides clearly


THRESHOLDS = {
    "fp32": Thresholds(0.9999, 1e-3, 1.0),
    "fp16": Thresholds(0.999, 1e-2, 0.99),
    "bf16": Thresholds(0.99, 3e-2, 0.98),
    "int8": Thresholds(0.98, 5e-2, 0.95),
}


def eager_reference(cfg: Any, **options: Any) -> EngineConfig:
    """Eager fp32 on the CPU, for the model and weights of `cfg` (an export's or an engine's
    config): what every artifact is compared with. `options`: the eager engine's own (a
    vision resize budget)."""
    return EngineConfig(
        engine="eager",
        model=cfg.model,
        weights=cfg.weights,
        model_path=cfg.model_path,
        seed=cfg.seed,
        device="cpu",
        trust_remote_code=cfg.trust_remote_code,
        max_seq_len=getattr(cfg, "max_seq_len", None),
        options=engine_class("eager").Options(**options),
    )


def parity_texts(tokenizer, shapes=PARITY_SHAPES, seed: int = 12345) -> list[list[str]]:
    """Fresh inputs per (batch, tokens) shape; rows vary in length so padding is exercised."""
    out = []
    for i, (batch, tokens) in enumerate(shapes):
        targets = [max(4, tokens - 3 * j) for j in range(batch)]
        out.append(texts_with_token_counts(tokenizer, targets, seed=seed + i))
    return out


# vision parity: (batch, image sizes); mixed sizes exercise padding of tokens and patches
VISION_SHAPES: tuple[tuple[int, tuple[tuple[int, int], ...]], ...] = (
    (1, ((448, 336),)),
    (3, ((600, 400), (280, 420), (336, 336))),
)


def bucket_shapes(buckets) -> tuple[tuple[int, tuple[tuple[int, int], ...]], ...]:
    """Vision parity shapes for fixed (batch, grid h, grid w) buckets: each batch holds `batch`
    different pages of the one size the processor keeps at that grid."""
    return tuple((b, (bucket_pixels(gh, gw),) * b) for b, gh, gw in buckets)


def parity_images(shapes=VISION_SHAPES, seed: int = 12345) -> list[list[bytes]]:
    """Fresh synthetic document pages per shape (PNG bytes, as a client would send)."""
    return [
        [encode_png(synthetic_page(w, h, seed=seed + 10 * i + j)) for j, (w, h) in enumerate(sizes)]
        for i, (_, sizes) in enumerate(shapes)
    ]


def compare_multivector(
    reference: Engine, candidate: Engine, precision: str, shapes=VISION_SHAPES
) -> dict[str, Any]:
    """Multi-vector parity: equal vector counts per input, then cosine of every vector pair."""
    t = THRESHOLDS[precision]
    per_shape, failures = [], []
    worst = 1.0
    for (batch, sizes), images in zip(shapes, parity_images(shapes), strict=True):
        ref = reference.predict(images)
        got = candidate.predict(images)
        note = f"batch {batch} x {'/'.join(f'{w}x{h}' for w, h in sizes)}"
        if got.lengths is None or list(got.lengths) != list(ref.lengths):
            failures.append(
                f"{note}: vector counts {None if got.lengths is None else list(got.lengths)} "
                f"!= {list(ref.lengths)}"
            )
            continue
        if got.values.shape[-1] != ref.values.shape[-1]:
            failures.append(f"{note}: vector size {got.values.shape[-1]} != {ref.values.shape[-1]}")
            continue
        a = np.concatenate([r[:n] for r, n in zip(ref.values, ref.lengths, strict=True)])
        b = np.concatenate([g[:n] for g, n in zip(got.values, got.lengths, strict=True)])
        a, b = a.astype(np.float64), b.astype(np.float64)
        if not np.isfinite(b).all():
            failures.append(f"{note}: NaN/Inf in the candidate's output")
            continue
        cos = (a * b).sum(-1) / np.maximum(
            np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12
        )
        mc = float(cos.min())
        worst = min(worst, mc)
        per_shape.append(
            {
                "batch": batch,
                "sizes": [list(s) for s in sizes],
                "vectors": [int(n) for n in ref.lengths],
                "min_cosine": mc,
            }
        )
        if mc < t.min_cosine:
            failures.append(f"{note}: min per-vector cosine {mc:.6f} < {t.min_cosine}")
    return {
        "passed": not failures,
        "precision": precision,
        "metric": f"min_vec_cos={worst:.6f},counts_equal={not any('counts' in f for f in failures)}",
        "thresholds": asdict(t),
        "shapes": per_shape,
        "failures": failures,
        "reference": "eager fp32",
    }


def compare(
    reference: Engine,
    candidate: Engine,
    precision: str,
    shapes=PARITY_SHAPES,
    vision_shapes=VISION_SHAPES,
) -> dict[str, Any]:
    """Run both engines end to end on the same texts (images: `vision_shapes`); return a
    JSON-able verdict."""
    if reference.spec.multi_vector:
        return compare_multivector(reference, candidate, precision, vision_shapes)
    t = THRESHOLDS[precision]
    task = reference.spec.task
    per_shape, failures = [], []
    worst: dict[str, float] = {"min_cosine": 1.0, "max_dprob": 0.0, "top1": 1.0}
    for (batch, tokens), texts in zip(
        shapes, parity_texts(reference.pipeline.tokenizer, shapes), strict=True
    ):
        ref = reference.predict(texts).values.astype(np.float64)
        got = candidate.predict(texts).values.astype(np.float64)
        shape_note = f"batch {batch} x {tokens} tokens"
        if ref.shape != got.shape:
            failures.append(f"{shape_note}: output shape {got.shape} != {ref.shape}")
            continue
        if not np.isfinite(got).all():
            failures.append(f"{shape_note}: NaN/Inf in the export's output")
            continue
        entry: dict[str, Any] = {"batch": batch, "tokens": tokens}
        if task == "classification":
            dprob = float(np.abs(got - ref).max())
            top_ref = np.sort(ref, axis=-1)
            # a random-weight classifier has near-tied classes; only clear decisions must agree
            decisive = (top_ref[:, -1] - top_ref[:, -2]) > 2 * t.max_dprob
            agree = ref.argmax(-1) == got.argmax(-1)
            top1 = float(agree[decisive].mean()) if decisive.any() else 1.0
            entry.update(max_dprob=dprob, top1=top1, decisive=int(decisive.sum()))
            worst["max_dprob"] = max(worst["max_dprob"], dprob)
            worst["top1"] = min(worst["top1"], top1)
            if dprob > t.max_dprob:
                failures.append(f"{shape_note}: max |Δprob| {dprob:.2e} > {t.max_dprob:.0e}")
            if top1 < t.min_top1:
                failures.append(f"{shape_note}: top-1 agreement {top1:.3f} < {t.min_top1}")
        else:
            a = ref.reshape(-1, ref.shape[-1])
            b = got.reshape(-1, got.shape[-1])
            cos = (a * b).sum(-1) / np.maximum(
                np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12
            )
            mc = float(cos.min())
            entry.update(min_cosine=mc)
            worst["min_cosine"] = min(worst["min_cosine"], mc)
            if mc < t.min_cosine:
                failures.append(f"{shape_note}: min cosine {mc:.6f} < {t.min_cosine}")
        per_shape.append(entry)
    if task == "classification":
        metric = f"top1={worst['top1']:.3f},max_dprob={worst['max_dprob']:.2e}"
    else:
        metric = f"min_cos={worst['min_cosine']:.6f}"
    return {
        "passed": not failures,
        "precision": precision,
        "metric": metric,
        "thresholds": asdict(t),
        "shapes": per_shape,
        "failures": failures,
        "reference": "eager fp32",
    }


def compare_on_texts(
    reference: Engine, candidate: Engine, precision: str, texts: list[str], batch: int = 8
) -> dict[str, Any]:
    """The gate on given texts (a run's own workload): the same thresholds as `compare`, and
    the margin to them (how far the worst input is from failing)."""
    t = THRESHOLDS[precision]
    refs, gots = [], []
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        refs.append(reference.predict(chunk).values.astype(np.float64))
        gots.append(candidate.predict(chunk).values.astype(np.float64))
    ref, got = np.concatenate(refs), np.concatenate(gots)
    n = len(texts)
    if not np.isfinite(got).all():
        return {"passed": False, "n": n, "metric": "NaN/Inf in the output", "margin": None}
    if reference.spec.task == "classification":
        dprob = float(np.abs(got - ref).max())
        agree = float((ref.argmax(-1) == got.argmax(-1)).mean())
        margin = t.max_dprob - dprob
        return {
            "passed": margin >= 0,
            "n": n,
            "metric": f"max_dprob={dprob:.2e},top1={agree:.3f}",
            "margin": margin,
        }
    cos = (ref * got).sum(-1) / np.maximum(
        np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1), 1e-12
    )
    mc = float(cos.min())
    return {
        "passed": mc >= t.min_cosine,
        "n": n,
        "metric": f"min_cos={mc:.6f},mean_cos={float(cos.mean()):.6f}",
        "margin": mc - t.min_cosine,
    }
