"""How sure a number is: confidence intervals and distribution-free percentile bounds.

- `t_interval(values)`: the mean of independent repeats with a Student-t interval.
- `batch_means(values)`: the same over the windows of one run (1-second throughput buckets),
  which are close to independent once a window is long against one call.
- `percentile_upper_bound(samples, q)`: an order statistic that bounds the q-th percentile from
  above with the given confidence, whatever the distribution (the binomial argument MLPerf's
  server scenario uses); None when the samples are too few to bound it.
- `samples_needed(q)`: the fewest samples that can bound the q-th percentile at all.
- `ratio_interval(a, b)`: b / a with an interval, from two intervals (log-delta method).

No scipy: the t quantile comes from a table (and the Cornish-Fisher series past it), the
binomial tail from its log pmf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
Z_975 = 1.959963984540054
#: two-sided 95 % Student-t quantiles t(0.975, df), df = 1..30
_T975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157,
    2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922,
    2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831,
    2.048407, 2.045230, 2.042272,
)  # fmt: skip


def finite(v) -> float | None:
    """`v` as a float when it is a finite number (a cell, a numpy scalar), else None."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def t_quantile_975(df: int) -> float:
    """t(0.975, df): the table to 30, then the Cornish-Fisher series in 1/df (error < 1e-5)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = Z_975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


@dataclass(frozen=True)
class Interval:
    """A mean with its 95 % interval; `method` says how it was made, `n` from how many values."""

    mean: float
    low: float
    high: float
    n: int
    method: str  # "t(repeats)" | "batch-means" | "single" (no interval)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def relative(self) -> float:
        """Half-width over the mean (nan when the mean is 0)."""
        return self.half_width / self.mean if self.mean else math.nan

    def standard_error(self) -> float:
        """The standard error the interval was made from (nan without one)."""
        if self.n < 2 or not math.isfinite(self.low):
            return math.nan
        return self.half_width / t_quantile_975(self.n - 1)


def _interval(values, method: str) -> Interval:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0, method)
    mean = float(v.mean())
    if v.size < 2:
        return Interval(mean, math.nan, math.nan, 1, "single")
    half = t_quantile_975(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return Interval(mean, mean - half, mean + half, int(v.size), method)


def t_interval(values) -> Interval:
    """Mean of independent repeats with its 95 % Student-t interval."""
    return _interval(values, "t(repeats)")


def batch_means(values) -> Interval:
    """Mean of one run's windows (batch means) with the t interval over the windows."""
    return _interval(values, "batch-means")


def _log_binom_cdf(n: int, q: float) -> np.ndarray:
    """log P(Binomial(n, q) <= k) for k = 0..n."""
    if q <= 0.0:
        return np.zeros(n + 1)
    if q >= 1.0:
        out = np.full(n + 1, -np.inf)
        out[-1] = 0.0
        return out
    k = np.arange(n, dtype=np.float64)
    steps = np.log((n - k) / (k + 1)) + math.log(q / (1 - q))
    log_pmf = np.concatenate(([n * math.log1p(-q)], n * math.log1p(-q) + np.cumsum(steps)))
    return np.logaddexp.accumulate(log_pmf)


def upper_rank(n: int, q: float, confidence: float = CONFIDENCE) -> int | None:
    """The smallest rank r (1-based) with P(X_(r) >= the q-quantile) >= confidence, i.e.
    P(Binomial(n, q) <= r - 1) >= confidence; None when even the largest sample is not enough."""
    if n < 1:
        return None
    cdf = np.exp(_log_binom_cdf(n, q))
    ok = np.nonzero(cdf >= confidence)[0]
    if ok.size == 0 or ok[0] >= n:
        return None
    return int(ok[0]) + 1


def percentile_upper_bound(samples, percentile: float, confidence: float = CONFIDENCE):
    """A value at least the true `percentile` (0-100) with `confidence`, from order statistics;
    None when the samples cannot bound it (too few: see `samples_needed`)."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    rank = upper_rank(x.size, percentile / 100.0, confidence)
    return None if rank is None else float(x[rank - 1])


def samples_needed(percentile: float, confidence: float = CONFIDENCE) -> int:
    """The fewest samples whose largest one bounds the `percentile` with `confidence`:
    1 - q^n >= confidence (299 for the p99 at 95 %)."""
    q = percentile / 100.0
    return int(math.ceil(math.log(1 - confidence) / math.log(q) - 1e-12))


def exceedance_decided(over: int, n: int, percentile: float, confidence: float = CONFIDENCE):
    """Early stopping for "is the `percentile` under the limit?", from `over` of `n` samples
    above it: True when it is (the p-th percentile is bounded under the limit), False when it
    clearly is not (even the lower bound of the share over the limit exceeds 1 - q), None when
    more samples are needed."""
    q = percentile / 100.0
    if n < 1:
        return None
    cdf = np.exp(_log_binom_cdf(n, q))
    # at most `over` samples above the limit: the limit is an upper bound when the rank of the
    # first sample above it, n - over + 1 ... i.e. at least `upper_rank` samples are under it
    rank = upper_rank(n, q, confidence)
    if rank is not None and n - over >= rank:
        return True
    # P(at least `over` samples over the limit | the share over it is exactly 1 - q) small:
    # P(Binomial(n, q) <= n - over) <= 1 - confidence
    if over > 0 and cdf[n - over] <= 1 - confidence:
        return False
    return None


def ratio_interval(a: Interval, b: Interval) -> Interval:
    """b / a with a 95 % interval by the log-delta method (each side's standard error from its
    interval; z when both sides are large, else t with the smaller side's degrees of freedom)."""
    if not (a.mean > 0 and b.mean > 0):
        return Interval(math.nan, math.nan, math.nan, 0, "ratio")
    ratio = b.mean / a.mean
    se_a, se_b = a.standard_error(), b.standard_error()
    if not (math.isfinite(se_a) and math.isfinite(se_b)):
        return Interval(ratio, math.nan, math.nan, min(a.n, b.n), "ratio")
    se_log = math.sqrt((se_a / a.mean) ** 2 + (se_b / b.mean) ** 2)
    t = t_quantile_975(max(1, min(a.n, b.n) - 1))
    return Interval(
        ratio, ratio * math.exp(-t * se_log), ratio * math.exp(t * se_log), min(a.n, b.n), "ratio"
    )
