"""Typed measurement values that compute their own statistics (latency, throughput, tokens).

The one latency type: the harness's rows and the batcher's /metrics and Triton statistics
both use `Latency` (here, so `serving` may import it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PERCENTILES = (0, 50, 90, 95, 99, 100)
SEED_STATS = ("avg", "p50", "p90", "p95", "p99")  # the *_latency_ms result columns
NEURONPERF_STATS = ("p0", "p50", "p90", "p95", "p99", "p100")  # neuronperf's latency_ms_*


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

    @classmethod
    def from_ns(cls, durations_ns) -> Latency:
        ms = np.asarray(durations_ns, dtype=np.float64) / 1e6
        if ms.size == 0:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan, nan, nan)
        p = np.percentile(ms, PERCENTILES)
        return cls(int(ms.size), float(ms.mean()), *(float(x) for x in p))

    def columns(self, pattern: str, stats: tuple[str, ...] = SEED_STATS) -> dict[str, float]:
        """Result columns named by `pattern` ("{}_latency_ms" -> p50_latency_ms, ...)."""
        return {pattern.format(s): getattr(self, s) for s in stats}


@dataclass(frozen=True)
class Throughput:
    """Inputs per second from completion times (neuronperf-style 1-second buckets)."""

    avg: float
    peak: float
    method: str  # "1s-buckets" | "completion-rate"
    window_s: float

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
            return cls(float(inner.mean()), float(inner.max()), "1s-buckets", window)
        return cls(rate, rate, "completion-rate", window)


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
