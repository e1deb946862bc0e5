"""Workloads: synthetic text with a target token-count distribution, local files, or Hub datasets."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from engines.errors import ConfigError
from engines.models import hub_reachable
from engines.textgen import texts_with_token_counts
from harness.measure import TokenStats

log = logging.getLogger(__name__)

# Seed 000's datasets and their measured length profiles.
TASK_DEFAULTS = {
    "classification": dict(
        dataset="tyqiangz/multilingual-sentiments",
        config="all",
        split="train",
        text_column="text",
        label_column="label",
        mean=100.0,
        sd=None,
        min=50,
    ),
    "embedding": dict(
        dataset="sentence-transformers/trivia-qa-triplet",
        config=None,
        split="train",
        text_column="positive",
        label_column=None,
        mean=144.0,
        sd=14.0,
        min=8,
    ),
    # seed 000's vision data: RLAIF-V images (mostly ~600x400); see harness/images.py
    "vision-embedding": dict(
        dataset="openbmb/RLAIF-V-Dataset",
        config=None,
        split="train",
        image_column="image",
    ),
}
FILE_SUFFIXES = (".jsonl", ".csv", ".parquet")


@dataclass(frozen=True)
class WorkloadSpec:
    """Where inputs come from. `source`: auto | synthetic | a .jsonl/.csv/.parquet path | hub id."""

    task: str = "classification"
    source: str = "auto"
    n: int = 512
    tokens_mean: float | None = None
    tokens_sd: float | None = None
    tokens_min: int | None = None
    text_column: str | None = None
    label_column: str | None = None
    seed: int = 0
    # vision workloads: synthetic page sizes (drawn uniformly), the image column of a
    # .parquet/Hub dataset, and the image processor's resize budget
    image_sizes: tuple[tuple[int, int], ...] = ()
    image_column: str | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        if self.task not in TASK_DEFAULTS:
            raise ConfigError(
                f"text workloads exist for {', '.join(TASK_DEFAULTS)}; got task {self.task!r}"
            )
        if self.n < 1:
            raise ConfigError(f"--num-samples must be >= 1; got {self.n}")
        if self.tokens_mean is not None and self.tokens_mean < 3:
            raise ConfigError(f"--tokens-mean must be >= 3; got {self.tokens_mean}")
        if self.tokens_min is not None and self.tokens_min < 3:
            raise ConfigError(f"--tokens-min must be >= 3; got {self.tokens_min}")
        if self.tokens_sd is not None and self.tokens_sd < 0:
            raise ConfigError(f"--tokens-sd must be >= 0; got {self.tokens_sd}")

    @property
    def defaults(self) -> dict:
        return TASK_DEFAULTS[self.task]


@dataclass
class Workload:
    texts: list[str]
    labels: list | None
    token_counts: np.ndarray
    source: str  # what was actually used, recorded in every result
    truncated: int = 0
    pixels: np.ndarray | None = None  # vision: pixels per image (as decoded)
    visual_tokens: np.ndarray | None = None  # vision: merged visual tokens per image
    skipped: int = 0  # unreadable inputs left out

    @property
    def flop_args(self) -> dict[str, float]:
        """Extra arguments of ModelSpec.flops_per_input for this workload (vision: visual tokens)."""
        if self.visual_tokens is None:
            return {}
        vt = self.visual_tokens.astype(np.float64)
        return {"visual_tokens": float(vt.mean()), "visual_tokens_sq": float((vt * vt).mean())}

    @property
    def stats(self) -> TokenStats:
        return TokenStats.from_counts(self.token_counts)

    def batch(self, index: int, batch_size: int) -> tuple[list[str], list | None]:
        """The index-th batch, cycling through the workload."""
        n = len(self.texts)
        idx = [(index * batch_size + j) % n for j in range(batch_size)]
        labels = [self.labels[i] for i in idx] if self.labels is not None else None
        return [self.texts[i] for i in idx], labels


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
        # seed 000's classification text: a floor and a long right tail -> min + gamma(k=2)
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
    try:
        import datasets
    except ImportError as e:
        raise ConfigError('Hub datasets need the datasets package: pip install -e ".[data]"') from e
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


def load_workload(spec: WorkloadSpec, tokenizer, max_len: int) -> Workload:
    """`tokenizer` is the model's processor for vision models."""
    if spec.task == "vision-embedding":
        from harness.images import load_image_workload

        return load_image_workload(spec, tokenizer)
    src = spec.source
    if src == "synthetic":
        return synthetic(spec, tokenizer, max_len)
    if src.endswith(FILE_SUFFIXES) or os.path.sep in src and os.path.exists(src):
        return from_file(spec, tokenizer, max_len)
    if src == "auto":
        if hub_reachable():
            try:
                return from_hub(
                    WorkloadSpec(**{**spec.__dict__, "source": spec.defaults["dataset"]}),
                    tokenizer,
                    max_len,
                )
            except Exception as e:  # no `datasets`, network hiccups: fall back, say so
                log.warning(
                    "could not load %s (%s); using synthetic text",
                    spec.defaults["dataset"],
                    str(e).splitlines()[0],
                )
        else:
            log.warning("Hub unreachable: using synthetic text with the seed's length profile")
        return synthetic(spec, tokenizer, max_len)
    if not hub_reachable():
        raise ConfigError(
            f"--dataset {src!r} looks like a Hub id but the Hub is unreachable; "
            "pass a local .jsonl/.csv/.parquet file or --dataset synthetic"
        )
    return from_hub(spec, tokenizer, max_len)
