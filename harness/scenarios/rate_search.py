"""The rate search under a p99 target, as MLPerf's server scenario does it: pure logic, no HTTP.

`RateSearch.steps()` proposes Poisson rates and is sent each one's verdict: it doubles (or
halves) from its start until it holds a passing and a failing rate, then bisects (geometric
mean) between the highest passing and the lowest failing one until (hi - lo) / lo <= tolerance.
Every rate it answers with was measured. `probe(run, ...)` gives one rate's verdict: it runs
open-loop chunks (`run(duration_s, index) -> (requests, requests over the target)`) until
`core.stats.exceedance_decided` says the p99 is bounded under the target (pass) or clearly over
it (fail), or the sample / time budget is spent: undecided, which the search counts as failing.
`tally`, `goodput` and `rate_columns` read a chunk's or a rate's requests (their raw samples).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np

from core.measure import Throughput
from core.stats import exceedance_decided, percentile_upper_bound, samples_needed
from loadgen.loops import LoadResult, merge_results

PASS, FAIL, UNDECIDED = "pass", "fail", "undecided"
#: the note a stored row of the search carries for the rate the search answered with
ANSWER = "answer"
PERCENTILE = 99
#: the load loops' logger: a rate's merged chunks do not warn again
_LOOPS_LOG = logging.getLogger("loadgen.loops")
#: the shortest chunk worth a connection and its warm-up
MIN_CHUNK_S = 0.5


def passed(verdict: str | None) -> bool:
    return verdict in (PASS, ANSWER)


def round_rate(rate: float) -> float:
    """Rates keep 4 significant digits: the same on a resumed run as on the first."""
    return float(f"{rate:.4g}")


@dataclass
class RateSearch:
    """The highest rate whose verdict passes, bracketed within `tolerance` by measured rates."""

    tolerance: float
    start: float
    rate_min: float | None = None
    rate_max: float | None = None
    max_steps: int = 12  # doublings or halvings before the search gives up
    points: dict[float, str] = field(default_factory=dict)  # rate -> verdict
    lo: float | None = None  # the highest passing rate (the answer)
    hi: float | None = None  # the lowest failing rate

    def _clamp(self, rate: float) -> float:
        if self.rate_min is not None:
            rate = max(rate, self.rate_min)
        if self.rate_max is not None:
            rate = min(rate, self.rate_max)
        return round_rate(rate)

    def _record(self, rate: float, verdict: str) -> None:
        self.points[rate] = verdict
        if passed(verdict):
            self.lo = rate if self.lo is None else max(self.lo, rate)
        else:
            self.hi = rate if self.hi is None else min(self.hi, rate)

    @property
    def resolved(self) -> bool:
        """Whether the bracket is within the tolerance (False: the search ran out of range)."""
        return (
            self.lo is not None and self.hi is not None and self.hi / self.lo - 1 <= self.tolerance
        )

    def steps(self) -> Generator[float, str, None]:
        """Yield the rates to measure; each `yield` is sent that rate's verdict."""
        rate = self._clamp(self.start)
        for _ in range(self.max_steps + 1):
            self._record(rate, (yield rate))
            if self.lo is not None and self.hi is not None:
                break
            if self.lo is not None:  # all passed so far: double, unless at the top already
                if self.rate_max is not None and rate >= self.rate_max:
                    return
                rate = self._clamp(rate * 2)
            else:  # all failed so far: halve, unless at the bottom already
                if self.rate_min is not None and rate <= self.rate_min:
                    return
                rate = self._clamp(rate / 2)
        else:
            return
        while not self.resolved:
            mid = round_rate(math.sqrt(self.lo * self.hi))
            if mid in self.points or not self.lo < mid < self.hi:
                return
            self._record(mid, (yield mid))


@dataclass
class Probe:
    """One rate's measurement: requests, those over the target, the chunks run, the verdict."""

    verdict: str = UNDECIDED
    n: int = 0
    over: int = 0
    chunks: int = 0
    seconds: float = 0.0


def chunk_samples(n: int, percentile: float = PERCENTILE) -> int:
    """How many arrivals the next chunk aims at, after `n` so far: a third of what bounds the
    percentile first (a clear failure stops there), then that much and a tenth, then half again
    of what was measured."""
    need = samples_needed(percentile)
    if n == 0:
        return max(need // 3, 1)
    if n < need:
        return need + need // 10 - n
    return max(n // 2, need // 2)


def probe(
    run: Callable[[float, int], tuple[int, int]],
    rate: float,
    *,
    max_samples: int,
    max_seconds: float,
    percentile: float = PERCENTILE,
) -> Probe:
    """Measure `rate` in open-loop chunks until the early-stopping rule decides or the budget
    (`max_samples` requests, `max_seconds` of arrivals) is spent. `run(duration_s, index)` runs
    one chunk and returns (requests, requests over the target): a failed request, or one never
    answered, counts as over."""
    p = Probe()
    while True:
        want = min(chunk_samples(p.n, percentile), max_samples - p.n)
        left = max_seconds - p.seconds
        if want <= 0 or left <= 0:
            return p
        duration = min(max(want / rate, MIN_CHUNK_S), left)
        n, over = run(duration, p.chunks)
        p.n, p.over, p.chunks, p.seconds = (
            p.n + n,
            p.over + over,
            p.chunks + 1,
            p.seconds + duration,
        )
        decided = exceedance_decided(p.over, p.n, percentile)
        if decided is not None:
            p.verdict = PASS if decided else FAIL
            return p


# ------------------------------------------------------------------------- rows
def _latency_ms(res: LoadResult) -> np.ndarray:
    """Every request's latency from its scheduled send: an answered one's own, inf for one that
    failed or was never answered (in flight or unsent when the chunk ended)."""
    s = res.samples
    ok = s.kind == "ok"
    answered = np.where(ok, (s.end - s.start) / 1e6, np.inf)
    return np.concatenate([answered, np.full(res.dropped + res.unstarted, np.inf)])


def tally(res: LoadResult, limit_ms: float) -> tuple[int, int]:
    """(requests, requests over `limit_ms`) of one chunk; failed or unanswered ones are over."""
    lat = _latency_ms(res)
    return int(lat.size), int((lat > limit_ms).sum())


def goodput(res: LoadResult, limit_ms: float) -> float | None:
    """Inputs per second answered within `limit_ms`: the run's throughput times the share of
    its answered inputs that came back within it (so goodput <= throughput, same window);
    None without raw samples (k6)."""
    s = res.samples
    if s is None:
        return None
    ok = s.kind == "ok"
    answered = float(s.inputs[ok].sum())
    if not answered:
        return 0.0
    within = float(s.inputs[ok & ((s.end - s.start) / 1e6 <= limit_ms)].sum())
    return res.throughput.avg * within / answered


def _span_s(res: LoadResult) -> float:
    """From a chunk's first arrival to its last answer: the window its requests were served in
    (the connection, warm-up and the wait for stragglers outside it)."""
    s = res.samples
    if s is None or s.end.size == 0:
        return res.test_duration_sec
    return max(int(s.end.max()) - int(s.start.min()), 0) / 1e9


def rate_result(chunks: list[LoadResult]) -> LoadResult:
    """A rate's chunks as one run: latencies over every request of them, throughput over the
    chunks' own windows (the gaps between them are no part of it), their summed duration."""
    quiet = _LOOPS_LOG.disabled  # each chunk already warned of its failures and late sends
    _LOOPS_LOG.disabled = True
    try:
        merged = merge_results(chunks)
    finally:
        _LOOPS_LOG.disabled = quiet
    seconds = sum(_span_s(c) for c in chunks)
    s = merged.samples
    inputs = float(s.inputs[s.kind == "ok"].sum())
    avg = inputs / seconds if seconds > 0 else 0.0
    peak = max((c.throughput.peak for c in chunks), default=avg)
    merged.throughput = Throughput(avg, peak, "completion-rate", seconds)
    merged.test_duration_sec = sum(c.test_duration_sec for c in chunks)
    return merged


def rate_columns(res: LoadResult, p: Probe, rate: float, limit_ms: float) -> dict[str, object]:
    """The columns a probed rate's row adds: what was offered, the SLO, the goodput and the p99
    bound over every request (a failed or unanswered one as infinitely late)."""
    upper = percentile_upper_bound(_latency_ms(res), PERCENTILE)
    return {
        "offered_rate": rate,
        "slo_ms": limit_ms,
        "goodput": goodput(res, limit_ms),
        "n_samples": p.n,
        "p99_upper_ms": upper if upper is not None and math.isfinite(upper) else None,
        # on a rate-search row: whether the early-stopping rule decided (pass or fail)
        "p99_resolved": p.verdict != UNDECIDED,
        "p99_samples_needed": samples_needed(PERCENTILE),
    }


def verdict_of(row: dict | None) -> str:
    """A stored row's verdict, from its config_json note (none: undecided, i.e. failing)."""
    try:
        note = json.loads((row or {}).get("config_json") or "{}").get("rate_search")
    except (TypeError, ValueError, AttributeError):
        note = None
    return note if isinstance(note, str) else UNDECIDED


def with_verdict(row: dict, verdict: str) -> str:
    """The row's config_json with this verdict (ANSWER marks the search's answer)."""
    cfg = json.loads(row.get("config_json") or "{}")
    cfg["rate_search"] = verdict
    return json.dumps(cfg, sort_keys=True, default=str)


def describe_answer(search: RateSearch, limit_ms: float, inputs_per_request: int = 1) -> str:
    """The search's answer in one line, in inputs/s (requests/s x inputs per request)."""
    k = inputs_per_request
    what = f"highest rate with p99 ≤ {limit_ms:g} ms at 95 %"
    tried = ", ".join(f"{r:g}" for r in sorted(search.points))
    if search.lo is None:
        return f"{what}: none: every rate tried failed (requests/s: {tried})"
    if search.hi is None:
        return (
            f"{what}: at least {search.lo * k:,.1f} inputs/s: every rate tried passed "
            f"(requests/s: {tried}; raise --rate-max)"
        )
    gap = search.hi / search.lo - 1
    tol = f"±{search.tolerance * 100:g} %"
    within = f"tolerance {tol}" if search.resolved else f"NOT within the tolerance {tol}"
    return (
        f"{what}: {search.lo * k:,.1f} inputs/s ({within}: {search.hi * k:,.1f} inputs/s "
        f"failed, {gap:.1%} above; requests/s tried: {tried})"
    )


def search_rows(rows: list[dict]) -> list[dict]:
    """The rows of rate-search rates, by group and rate, each with its `verdict`."""
    out = []
    for r in rows:
        try:
            cfg = json.loads(r.get("config_json") or "{}")
        except (TypeError, ValueError):
            continue
        if isinstance(cfg, dict) and cfg.get("search") == "rate":
            out.append({**r, "verdict": cfg.get("rate_search", UNDECIDED)})
    return sorted(
        out, key=lambda r: (r.get("batch_size"), r.get("inputs_per_request"), r["offered_rate"])
    )
