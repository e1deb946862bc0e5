"""What every workload shares: the spec (where inputs come from), the loaded inputs, and the
choice between a Hub dataset and synthetic inputs."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.config import arg
from core.errors import ConfigError
from core.measure import TokenStats
from engines.models import hub_reachable

log = logging.getLogger(__name__)

# The default dataset per task and its measured length profile (data, not code)
TASK_DEFAULTS = {
    k: v
    for k, v in json.loads(Path(__file__).with_name("datasets.json").read_text()).items()
    if not k.startswith("_")
}


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """'600x400,1200x800' -> ((600, 400), (1200, 800)); the mix is drawn uniformly."""
    sizes = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if not part:
            continue
        w, sep, h = part.partition("x")
        try:
            wh = (int(w), int(h))
        except ValueError:
            wh = (0, 0)
        if not sep or min(wh) < 1 or max(wh) > 20000:
            raise ConfigError(
                f"--image-sizes takes WIDTHxHEIGHT[,WIDTHxHEIGHT...] with sides in [1, 20000]; "
                f"got {part!r}"
            )
        sizes.append(wh)
    if not sizes:
        raise ConfigError("--image-sizes must name at least one size, e.g. 600x400")
    return tuple(sizes)


def _sizes_flag(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return parse_sizes(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


@dataclass(frozen=True)
class WorkloadSpec:
    """Where inputs come from. `source`: auto | synthetic | a .jsonl/.csv/.parquet path | hub id."""

    # the model's task, the target's seed and resize budget: filled in from the target
    task: str = arg("classification", cli=False, help="")
    source: str = arg(
        "auto",
        flag="--dataset",
        metavar="DATASET",
        help="auto (seed dataset when the Hub is reachable, else synthetic), synthetic, a "
        ".jsonl/.csv/.parquet file, or a Hub dataset id",
    )
    n: int = arg(512, flag="--num-samples", metavar="N", help="distinct inputs in the workload")
    tokens_mean: float | None = arg(
        None, help="synthetic: mean tokens per input (default 100 classification, 144 embedding)"
    )
    tokens_sd: float | None = arg(
        None, help="synthetic: sd of tokens (default: min+gamma tail / 14 for embedding)"
    )
    tokens_min: int | None = arg(None, help="synthetic: minimum tokens")
    text_column: str | None = arg(None, help="the text column of a file or Hub dataset")
    label_column: str | None = arg(None, help="the label column (accuracy, when present)")
    seed: int = arg(0, cli=False, help="")
    # vision workloads: synthetic page sizes (drawn uniformly), the image column of a
    # .parquet/Hub dataset, and the image processor's resize budget
    image_sizes: tuple[tuple[int, int], ...] = arg(
        (),
        parse=_sizes_flag,
        metavar="WxH[,WxH...]",
        help="vision, synthetic pages: sizes drawn uniformly (default 600x400, a document page)",
    )
    image_column: str | None = arg(None, help="vision: image column (default image)")
    min_pixels: int | None = arg(None, cli=False, help="")
    max_pixels: int | None = arg(None, cli=False, help="")

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
    """The inputs of a run (texts, or encoded images), their token counts and where they came from."""

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


def import_datasets():
    """The `datasets` package, or a ConfigError naming the extra that installs it."""
    try:
        import datasets
    except ImportError as e:
        raise ConfigError('Hub datasets need the datasets package: pip install -e ".[data]"') from e
    return datasets


def hub_or_synthetic(
    spec: WorkloadSpec,
    from_hub: Callable[[WorkloadSpec], Workload],
    synthetic: Callable[[], Workload],
    *,
    fallback: str,
    offline: str,
    not_local: str,
) -> Workload:
    """`auto`: the task's seed dataset when the Hub answers, else synthetic inputs (said in one
    line); any other source is a Hub id, which needs the Hub."""
    if spec.source == "auto":
        if hub_reachable():
            try:
                return from_hub(replace(spec, source=spec.defaults["dataset"]))
            except Exception as e:  # no `datasets`, network hiccups: fall back, say so
                log.warning(
                    "could not load %s (%s); using %s",
                    spec.defaults["dataset"],
                    str(e).splitlines()[0],
                    fallback,
                )
        else:
            log.warning("Hub unreachable: using %s", offline)
        return synthetic()
    if not hub_reachable():
        raise ConfigError(f"--dataset {spec.source!r} {not_local}")
    return from_hub(spec)
