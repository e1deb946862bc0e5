"""Typed measurement values that compute their own statistics (latency, throughput, tokens).

The one latency type: the harness's rows and the batcher's /metrics and Triton statistics
both use `Latency` (here, so `serving` may import it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core import stats

PERCENTILES = (0, 50, 90, 95, 99, 100)
SEED_STATS = ("avg", "p50", "p90", "p95", "p99")  # the *_latency_ms result columns
NEURONPERF_STATS = ("p0", "p50", "p90", "p95", "p99", "p100")  # neuronperf's latency_ms_*
BOUNDED = (50, 90, 95, 99)  # percentiles that get a distribution-free upper bound
_NAN = float("nan")


@dataclass(frozen=True)
class Latency:
    """Latency statistics in milliseconds over all calls."""

    count: int
    avg: float
    p0: float
    p50: float
    p90: float
    p95: float
    p99: float
    p100: float
    # 95 % distribution-free upper bounds (order statistics); nan: too few samples to bound
    p50_upper: float = _NAN
    p90_upper: float = _NAN
    p95_upper: float = _NAN
    p99_upper: float = _NAN

    @classmethod
    def from_ns(cls, durations_ns) -> Latency:
        ms = np.asarray(durations_ns, dtype=np.float64) / 1e6
        if ms.size == 0:
            return cls(0, *([_NAN] * 7))
        p = np.percentile(ms, PERCENTILES)
        ms.sort()
        uppers = []
        for q in BOUNDED:
            rank = stats.upper_rank(ms.size, q / 100.0)
            uppers.append(_NAN if rank is None else float(ms[rank - 1]))
        return cls(int(ms.size), float(ms.mean()), *(float(x) for x in p), *uppers)

    def columns(self, pattern: str, stats: tuple[str, ...] = SEED_STATS) -> dict[str, float]:
        """Result columns named by `pattern` ("{}_latency_ms" -> p50_latency_ms, ...)."""
        return {pattern.format(s): getattr(self, s) for s in stats}

    @property
    def p99_resolved(self) -> bool:
        return math.isfinite(self.p99_upper)

    def bound_columns(self) -> dict[str, object]:
        """The row's sample count and each percentile's upper bound (empty when unresolved)."""
        out: dict[str, object] = {"n_samples": self.count}
        for q in BOUNDED:
            v = getattr(self, f"p{q}_upper")
            out[f"p{q}_upper_ms"] = v if math.isfinite(v) else None
        out["p99_resolved"] = self.p99_resolved
        out["p99_samples_needed"] = stats.samples_needed(99)
        return out


@dataclass(frozen=True)
class Throughput:
    """Inputs per second from completion times (neuronperf-style 1-second buckets)."""

    avg: float
    peak: float
    method: str  # "1s-buckets" | "completion-rate"
    window_s: float
    # the 95 % interval of `avg` over the run's windows (batch means); nan: too few windows
    ci_low: float = _NAN
    ci_high: float = _NAN
    windows: int = 0

    @classmethod
    def from_completions(cls, start_ns, end_ns, inputs, *, min_buckets: int = 4) -> Throughput:
        """`start_ns`/`end_ns`/`inputs` per call.

        With enough 1-second buckets (and calls shorter than a bucket) the average excludes the
        first and last bucket and the peak is the busiest bucket, as neuronperf does. Runs too
        short or too coarse for that use inputs completed / (last end - first start).
        """
        start = np.asarray(start_ns, dtype=np.int64)
        end = np.asarray(end_ns, dtype=np.int64)
        n = np.asarray(inputs, dtype=np.int64)
        if end.size == 0:
            return cls(0.0, 0.0, "completion-rate", 0.0)
        t0 = int(start.min())
        window = (int(end.max()) - t0) / 1e9
        rate = float(n.sum() / window) if window > 0 else 0.0
        median_call_s = float(np.median(end - start)) / 1e9
        buckets = np.bincount(((end - t0) // 1_000_000_000).astype(np.int64), weights=n)
        if buckets.size >= min_buckets and median_call_s < 0.5:
            inner = buckets[1:-1]
            ci = stats.batch_means(inner)
            return cls(
                float(inner.mean()), float(inner.max()), "1s-buckets", window,
                ci.low, ci.high, int(inner.size),
            )  # fmt: skip
        return cls(rate, rate, "completion-rate", window)

    def interval_columns(self) -> dict[str, object]:
        """The row's throughput interval and how it was made (batch means over 1-s windows)."""
        resolved = math.isfinite(self.ci_low)
        return {
            "throughput_ci_low": self.ci_low if resolved else None,
            "throughput_ci_high": self.ci_high if resolved else None,
            "throughput_ci_method": "batch-means" if resolved else "single",
            "throughput_windows": self.windows,
        }


@dataclass(frozen=True)
class TokenStats:
    avg: float
    p50: float
    min: int
    max: int
    sd: float
    mean_sq: float  # E[T^2], for attention FLOPs

    @classmethod
    def from_counts(cls, counts) -> TokenStats:
        c = np.asarray(counts, dtype=np.float64)
        if c.size == 0:
            return cls(0.0, 0.0, 0, 0, 0.0, 0.0)
        return cls(
            float(c.mean()),
            float(np.median(c)),
            int(c.min()),
            int(c.max()),
            float(c.std()),
            float((c * c).mean()),
        )
