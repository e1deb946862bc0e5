"""Image workloads for vision models: synthetic pages, a folder, a Parquet image column, or
openbmb/RLAIF-V-Dataset when the Hub is reachable.

Every workload holds encoded image bytes (what an HTTP client sends) plus, per image, its
pixels and the tokens the model will see (prompt + merged visual tokens), so FLOPs, the
roofline floor and the result rows all use the same counts.
"""

from __future__ import annotations

import io
import logging
import os
import random

import numpy as np

from core.errors import ConfigError
from engines.vision import (
    ImageError,
    PixelBudget,
    decode_image,
    encode_png,
    image_bytes,
    image_grid,
    synthetic_page,
)
from workloads.base import Workload, WorkloadSpec, hub_or_synthetic, import_datasets

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_SIZES = ((600, 400),)  # RLAIF-V images are mostly about 600x400


def prompt_tokens(processor) -> int:
    """Tokens of the visual prompt around the image placeholder (placeholder not counted)."""
    ids = processor.tokenizer(processor.visual_prompt_prefix)["input_ids"]
    return len(ids) - 1


def _workload(
    images: list[bytes], sizes: list[tuple[int, int]], processor, budget, source, *, skipped=0
) -> Workload:
    vt = np.asarray([budget.visual_tokens(w, h) for w, h in sizes], dtype=np.int64)
    pixels = np.asarray([w * h for w, h in sizes], dtype=np.int64)
    counts = prompt_tokens(processor) + vt
    return Workload(
        list(images), None, counts, source, 0, pixels=pixels, visual_tokens=vt, skipped=skipped
    )


def synthetic_images(spec: WorkloadSpec, processor, budget: PixelBudget) -> Workload:
    sizes = spec.image_sizes or DEFAULT_SIZES
    rng = random.Random(spec.seed)
    # a few distinct pages are enough: decoding cost per image is what matters, not content
    n_distinct = min(spec.n, 64)
    chosen = [sizes[rng.randrange(len(sizes))] for _ in range(n_distinct)]
    pages = [
        encode_png(synthetic_page(w, h, seed=spec.seed * 1000 + i))
        for i, (w, h) in enumerate(chosen)
    ]
    images = [pages[i % n_distinct] for i in range(spec.n)]
    all_sizes = [chosen[i % n_distinct] for i in range(spec.n)]
    mix = ",".join(f"{w}x{h}" for w, h in sizes)
    return _workload(
        images, all_sizes, processor, budget, f"synthetic-pages({mix},n={spec.n},seed={spec.seed})"
    )


def _keep(raw_items, names, where: str, limit: int):
    """Decode each candidate; skip bad ones with one warning line; return bytes and sizes."""
    images, sizes, bad = [], [], []
    for raw, name in zip(raw_items, names, strict=True):
        if len(images) >= limit:
            break
        try:
            img = decode_image(raw)
        except ImageError as e:
            bad.append((name, str(e)))
            continue
        images.append(raw if isinstance(raw, bytes) else _encode(img))
        sizes.append(img.size)
    if bad:
        log.warning("%s: skipped %d unreadable image(s); first: %s: %s", where, len(bad), *bad[0])
    if not images:
        raise ConfigError(f"{where} has no readable images")
    return images, sizes, len(bad)


def _encode(img) -> bytes:
    fmt = (getattr(img, "format", None) or "PNG").upper()
    if fmt not in ("PNG", "JPEG"):
        return encode_png(img)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def from_folder(spec: WorkloadSpec, processor, budget: PixelBudget) -> Workload:
    path = spec.source
    names = sorted(
        f for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")
    )
    if not names:
        raise ConfigError(f"--dataset {path!r} has no image files ({', '.join(IMAGE_SUFFIXES)})")
    raws = []
    for f in names:
        with open(os.path.join(path, f), "rb") as fh:
            raws.append(fh.read())
    images, sizes, skipped = _keep(raws, names, path, spec.n)
    src = f"folder:{os.path.basename(os.path.normpath(path))}(n={len(images)},skipped={skipped})"
    return _workload(images, sizes, processor, budget, src, skipped=skipped)


def _cell_bytes(v):
    """A Parquet image cell: raw bytes, a base64 string, or datasets' {'bytes', 'path'} struct."""
    if isinstance(v, dict):
        return v.get("bytes") or b""
    return v


def from_parquet(spec: WorkloadSpec, processor, budget: PixelBudget) -> Workload:
    import pandas as pd

    path = spec.source
    try:
        df = pd.read_parquet(path)
    except Exception as e:
        raise ConfigError(f"--dataset {path!r} could not be read: {str(e).splitlines()[0]}") from e
    col = spec.image_column or "image"
    if col not in df.columns:
        raise ConfigError(
            f"--dataset {path!r} has no image column {col!r}; columns are {list(df.columns)}; "
            "pass --image-column"
        )
    cells = [_cell_bytes(v) for v in df[col].tolist()]
    images, sizes, skipped = _keep(cells, [f"row {i}" for i in range(len(cells))], path, spec.n)
    src = f"file:{os.path.basename(path)}[{col}](n={len(images)},skipped={skipped})"
    return _workload(images, sizes, processor, budget, src, skipped=skipped)


def from_hub(spec: WorkloadSpec, processor, budget: PixelBudget) -> Workload:
    datasets = import_datasets()
    d = spec.defaults
    ds = datasets.load_dataset(spec.source, split=f"{d['split']}[:{spec.n}]")
    col = spec.image_column or d["image_column"]
    if col not in ds.column_names:
        raise ConfigError(f"{spec.source} has no column {col!r}; columns: {ds.column_names}")
    imgs = ds[col]
    images, sizes, skipped = _keep(
        imgs, [f"row {i}" for i in range(len(imgs))], spec.source, spec.n
    )
    src = f"hub:{spec.source}[{col}](n={len(images)},skipped={skipped})"
    return _workload(images, sizes, processor, budget, src, skipped=skipped)


def load_image_workload(spec: WorkloadSpec, processor) -> Workload:
    """Dispatch on `spec.source` like the text workloads do."""
    budget = PixelBudget(
        spec.min_pixels or PixelBudget().min_pixels, spec.max_pixels or PixelBudget().max_pixels
    )
    src = spec.source
    if src == "synthetic":
        return synthetic_images(spec, processor, budget)
    if os.path.isdir(src):
        return from_folder(spec, processor, budget)
    if src.endswith(".parquet"):
        if not os.path.isfile(src):
            raise ConfigError(f"--dataset {src!r}: no such file")
        return from_parquet(spec, processor, budget)
    return hub_or_synthetic(
        spec,
        lambda s: from_hub(s, processor, budget),
        lambda: synthetic_images(spec, processor, budget),
        fallback="synthetic document pages",
        offline="synthetic document pages (~600x400)",
        not_local="is not a folder or .parquet file, and the Hub is unreachable; "
        "pass an image folder, a .parquet file with an image column, or synthetic",
    )


MAX_ONNX_BUCKETS = 16  # each bucket is one more export holding a full copy of the weights


def workload_buckets(
    images: list, budget: PixelBudget, batch_sizes
) -> tuple[tuple[int, int, int], ...]:
    """The fixed (batch, grid h, grid w) ONNX buckets a vision workload needs at these batch
    sizes: one per distinct image grid and batch size. A batch must hold one image size, so a
    workload of several sizes runs only at batch size 1."""
    from PIL import Image

    grids, seen = set(), set()
    for raw in images:
        if id(raw) in seen:  # synthetic workloads repeat a few page objects
            continue
        seen.add(id(raw))
        with Image.open(io.BytesIO(image_bytes(raw))) as img:  # the header only
            grids.add(image_grid(*img.size, budget))
    batches = sorted(set(batch_sizes))
    if len(grids) > 1 and batches[-1] > 1:
        raise ConfigError(
            f"--engine onnx runs vision per fixed image-size bucket, one image size per batch, "
            f"but this workload's images resize to {len(grids)} grids; use one --image-sizes "
            "size, or --batch-sizes 1"
        )
    buckets = tuple(sorted((b, gh, gw) for b in batches for gh, gw in grids))
    if len(buckets) > MAX_ONNX_BUCKETS:
        raise ConfigError(
            f"this workload needs {len(buckets)} ONNX buckets (image grids x batch sizes); the "
            f"limit is {MAX_ONNX_BUCKETS}: use fewer image sizes or batch sizes"
        )
    return buckets
