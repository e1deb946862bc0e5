"""Text workloads: synthetic text with a target token-count distribution, local files, or Hub
datasets."""

from __future__ import annotations

import logging
import os

import numpy as np

from core.errors import ConfigError
from engines.textgen import texts_with_token_counts
from workloads.base import Workload, WorkloadSpec, hub_or_synthetic, import_datasets

log = logging.getLogger(__name__)

FILE_SUFFIXES = (".jsonl", ".csv", ".parquet")


def count_tokens(tokenizer, texts: list[str], max_len: int) -> tuple[np.ndarray, int]:
    enc = tokenizer(list(texts), truncation=False, add_special_tokens=True)
    counts = np.asarray([len(x) for x in enc["input_ids"]], dtype=np.int64)
    truncated = int((counts > max_len).sum())
    return np.minimum(counts, max_len), truncated


def target_lengths(spec: WorkloadSpec, max_len: int) -> tuple[np.ndarray, str]:
    d = spec.defaults
    mean = spec.tokens_mean if spec.tokens_mean is not None else d["mean"]
    lo = spec.tokens_min if spec.tokens_min is not None else d["min"]
    sd = spec.tokens_sd if spec.tokens_sd is not None else d["sd"]
    rng = np.random.default_rng(spec.seed)
    lo = min(lo, mean)
    if sd is None:
        # classification text: a floor and a long right tail -> min + gamma(k=2)
        scale = (mean - lo) / 2.0
        raw = lo + (rng.gamma(2.0, scale, spec.n) if scale > 0 else np.zeros(spec.n))
        desc = f"mean={mean:g},min={lo}"
    else:
        raw = rng.normal(mean, sd, spec.n)
        desc = f"mean={mean:g},sd={sd:g},min={lo}"
    return np.clip(np.rint(raw), max(lo, 3), max_len).astype(np.int64), desc


def synthetic(spec: WorkloadSpec, tokenizer, max_len: int) -> Workload:
    """Texts built word by word until the model's own tokenizer reaches each target length."""
    targets, desc = target_lengths(spec, max_len)
    texts = texts_with_token_counts(tokenizer, targets, seed=spec.seed + 1)
    counts, truncated = count_tokens(tokenizer, texts, max_len)
    return Workload(
        texts, None, counts, f"synthetic({desc},n={spec.n},seed={spec.seed})", truncated
    )


def _clean(texts: list, labels: list | None, where: str) -> tuple[list[str], list | None]:
    keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
    dropped = len(texts) - len(keep)
    if not keep:
        raise ConfigError(f"{where} has no non-empty text rows")
    if dropped:
        log.warning("%s: skipped %d empty or non-text rows", where, dropped)
    return [texts[i] for i in keep], ([labels[i] for i in keep] if labels is not None else None)


def from_file(spec: WorkloadSpec, tokenizer, max_len: int) -> Workload:
    import pandas as pd

    path = spec.source
    if not os.path.isfile(path):
        raise ConfigError(f"--dataset {path!r}: no such file")
    try:
        if path.endswith(".jsonl"):
            df = pd.read_json(path, lines=True)
        elif path.endswith(".csv"):
            df = pd.read_csv(path)
        else:
            df = pd.read_parquet(path)
    except Exception as e:  # pandas raises many types for corrupt files
        raise ConfigError(f"--dataset {path!r} could not be read: {str(e).splitlines()[0]}") from e
    text_col = spec.text_column or ("text" if "text" in df.columns else None)
    if text_col is None or text_col not in df.columns:
        raise ConfigError(
            f"--dataset {path!r} has no text column {text_col or 'text'!r}; "
            f"columns are {list(df.columns)}; pass --text-column"
        )
    label_col = spec.label_column or ("label" if "label" in df.columns else None)
    if spec.label_column and spec.label_column not in df.columns:
        raise ConfigError(f"--label-column {spec.label_column!r} not in {list(df.columns)}")
    df = df.head(spec.n) if len(df) > spec.n else df
    labels = df[label_col].tolist() if label_col else None
    texts, labels = _clean(df[text_col].tolist(), labels, path)
    counts, truncated = count_tokens(tokenizer, texts, max_len)
    return Workload(
        texts, labels, counts, f"file:{os.path.basename(path)}(n={len(texts)})", truncated
    )


def from_hub(spec: WorkloadSpec, tokenizer, max_len: int) -> Workload:
    datasets = import_datasets()
    d = spec.defaults
    name = d["config"] if spec.source == d["dataset"] else None
    ds = datasets.load_dataset(spec.source, name, split=f"{d['split']}[:{spec.n}]")
    text_col = spec.text_column or d["text_column"]
    if text_col not in ds.column_names:
        raise ConfigError(f"{spec.source} has no column {text_col!r}; columns: {ds.column_names}")
    label_col = spec.label_column or d["label_column"]
    labels = ds[label_col] if label_col and label_col in ds.column_names else None
    texts, labels = _clean(ds[text_col], labels, spec.source)
    counts, truncated = count_tokens(tokenizer, texts, max_len)
    return Workload(texts, labels, counts, f"hub:{spec.source}(n={len(texts)})", truncated)


def load_text_workload(spec: WorkloadSpec, tokenizer, max_len: int) -> Workload:
    """Dispatch on `spec.source`: synthetic, a local file, auto (seed dataset or synthetic), Hub id."""
    src = spec.source
    if src == "synthetic":
        return synthetic(spec, tokenizer, max_len)
    if src.endswith(FILE_SUFFIXES) or os.path.sep in src and os.path.exists(src):
        return from_file(spec, tokenizer, max_len)
    return hub_or_synthetic(
        spec,
        lambda s: from_hub(s, tokenizer, max_len),
        lambda: synthetic(spec, tokenizer, max_len),
        fallback="synthetic text",
        offline="synthetic text with the dataset's length profile",
        not_local="looks like a Hub id but the Hub is unreachable; "
        "pass a local .jsonl/.csv/.parquet file or --dataset synthetic",
    )
