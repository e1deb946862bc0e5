"""The closed loop (k6 shared-iterations) and the open loop (Poisson arrivals), and their result.

Both drive one `Target` through a warmed-up `Client` and summarise with the same `Latency` and
`Throughput` types as the in-process benchmark. Throughput counts *inputs*: a request carrying
32 texts counts 32.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import ConfigError
from core.measure import Latency, Throughput
from loadgen.client import Client, connected
from loadgen.protocols import Target
from workloads import Workload

log = logging.getLogger(__name__)

CEILING_FRACTION = 0.5
# failure kinds, each counted separately; "ok" and "invalid" are the outcomes of a 2xx
FAILURE_KINDS = (
    "http_4xx",
    "http_429",
    "http_5xx",
    "http_other",
    "timeouts",
    "connection_errors",
    "invalid_responses",
)


@dataclass
class LoadResult:
    """One HTTP load run. `latency` is over successful requests (open loop: from the scheduled
    send time); `throughput` counts inputs of successful requests per second."""

    mode: str  # closed | open
    generator: str  # aiohttp | k6
    protocol: str
    task: str
    inputs_per_request: int
    vus: int | None
    iterations: int | None
    target_rate: float | None
    max_concurrency: int | None
    latency: Latency
    send_latency: Latency  # from the actual send; equals `latency` in a closed loop
    throughput: Throughput
    requests_per_sec: float  # all completed requests, compared with the ceiling
    total_requests: int
    successful_requests: int
    failed_requests: int
    http_4xx: int
    http_429: int
    http_5xx: int
    http_other: int
    timeouts: int
    connection_errors: int
    invalid_responses: int  # 2xx whose outputs failed a check (counted in failed_requests)
    invalid_embeddings: int  # outputs (inputs) that failed a check
    dropped: int  # in flight at the deadline, cancelled (not a failure)
    unstarted: int  # iterations / arrivals never sent before the deadline
    test_duration_sec: float
    avg_num_vectors: float | None
    min_num_vectors: int | None
    max_num_vectors: int | None
    accuracy: float | None
    late_requests: int
    max_late_ms: float
    client_cpu_percent: float | None  # 100 = one core
    ceiling_rps: float | None = None
    errors: dict[str, str] = field(default_factory=dict)  # first message per failure kind
    # every request's record (None from k6): what merge_results combines across generators
    samples: Samples | None = field(default=None, repr=False)
    late_threshold_ms: float = math.inf

    def to_row(self) -> dict[str, Any]:
        """The result-row columns this run fills (all in harness.results.COLUMNS)."""
        return {
            "total_requests": self.total_requests,
            "successful_requests": self.successful_requests,
            "failed_requests": self.failed_requests,
            "test_duration_sec": self.test_duration_sec,
            "avg_latency_ms": self.latency.avg,
            "p50_latency_ms": self.latency.p50,
            "p90_latency_ms": self.latency.p90,
            "p95_latency_ms": self.latency.p95,
            "p99_latency_ms": self.latency.p99,
            "throughput_req_per_sec": self.throughput.avg,
            "throughput_peak": self.throughput.peak,
            "throughput_avg": self.throughput.avg,
            "throughput_method": self.throughput.method,
            **self.throughput.interval_columns(),
            **self.latency.bound_columns(),
            "vus": self.vus,
            "inputs_per_request": self.inputs_per_request,
            "avg_num_vectors": self.avg_num_vectors,
            "min_num_vectors": self.min_num_vectors,
            "max_num_vectors": self.max_num_vectors,
            "invalid_embeddings": self.invalid_embeddings,
            "accuracy": self.accuracy,
            "task": self.task,
            "mode": "http",
            "protocol": self.protocol,
            "http_4xx": self.http_4xx,
            "http_429": self.http_429,
            "http_5xx": self.http_5xx,
            "timeouts": self.timeouts,
            "connection_errors": self.connection_errors,
            "dropped_requests": self.dropped,
            "late_requests": self.late_requests if self.mode == "open" else None,
            "max_late_ms": self.max_late_ms if self.mode == "open" else None,
            "client_cpu_percent": self.client_cpu_percent,
            "loadgen_ceiling_rps": self.ceiling_rps,
            "load_generator": self.generator,
        }


@dataclass
class Samples:
    """Every request of a run as arrays, times in epoch ns: runs of several load generators
    against one target at once concatenate into one (`concat`), and their latencies and
    throughput come from the union of the raw samples, never from averaged percentiles."""

    start: np.ndarray  # scheduled (open loop) or sent (closed loop)
    sent: np.ndarray
    end: np.ndarray
    inputs: np.ndarray
    kind: np.ndarray  # "ok", "invalid" or a FAILURE_KINDS entry
    invalid_out: np.ndarray
    correct: np.ndarray
    labelled: np.ndarray
    nvec: np.ndarray  # vectors per output (embeddings)
    first: dict[str, str]  # first message per failure kind

    @classmethod
    def from_recorder(cls, rec) -> Samples:
        if rec.rows:
            cols = list(zip(*rec.rows, strict=True))
            times = [np.asarray(c, dtype=np.int64) + rec.epoch_offset_ns for c in cols[:3]]
            ints = [np.asarray(c, dtype=np.int64) for c in (cols[3], *cols[5:])]
            kind = np.asarray(cols[4], dtype=str)
        else:
            times = [np.zeros(0, np.int64)] * 3
            ints = [np.zeros(0, np.int64)] * 4
            kind = np.zeros(0, dtype=str)
        start, sent, end = times
        inputs, invalid_out, correct, labelled = ints
        nvec = np.asarray(rec.nvec, dtype=np.int64)
        return cls(
            start, sent, end, inputs, kind, invalid_out, correct, labelled, nvec, dict(rec.first)
        )

    @classmethod
    def concat(cls, parts: list[Samples]) -> Samples:
        first: dict[str, str] = {}
        for p in parts:
            for k, v in p.first.items():
                first.setdefault(k, v)
        arrays = {
            name: np.concatenate([getattr(p, name) for p in parts])
            for name in (
                "start",
                "sent",
                "end",
                "inputs",
                "kind",
                "invalid_out",
                "correct",
                "labelled",
                "nvec",
            )
        }
        return cls(**arrays, first=first)


def _summarise(
    samples: Samples,
    *,
    protocol: str,
    task: str,
    inputs_per_request: int,
    mode: str,
    wall_s: float,
    cpu_percent: float | None,
    dropped: int,
    unstarted: int,
    late_threshold_ms: float,
    vus: int | None = None,
    iterations: int | None = None,
    target_rate: float | None = None,
    max_concurrency: int | None = None,
) -> LoadResult:
    """One run's records as a LoadResult; failures and late sends are logged."""
    s = samples
    kind = s.kind
    ok = kind == "ok"
    counts = {k: int((kind == k).sum()) for k in FAILURE_KINDS}
    counts["invalid_responses"] = int((kind == "invalid").sum())
    late = (s.sent - s.start) / 1e6
    nvec = s.nvec if task != "classification" and s.nvec.size else None
    n_labelled = int(s.labelled.sum())
    res = LoadResult(
        mode=mode,
        generator="aiohttp",
        protocol=protocol,
        task=task,
        inputs_per_request=inputs_per_request,
        vus=vus,
        iterations=iterations,
        target_rate=target_rate,
        max_concurrency=max_concurrency,
        latency=Latency.from_ns(s.end[ok] - s.start[ok]),
        send_latency=Latency.from_ns(s.end[ok] - s.sent[ok]),
        throughput=Throughput.from_completions(s.start[ok], s.end[ok], s.inputs[ok]),
        requests_per_sec=Throughput.from_completions(s.start, s.end, np.ones_like(s.end)).avg,
        total_requests=int(kind.size),
        successful_requests=int(ok.sum()),
        failed_requests=sum(counts.values()),
        invalid_embeddings=int(s.invalid_out.sum()),
        dropped=dropped,
        unstarted=unstarted,
        test_duration_sec=wall_s,
        avg_num_vectors=float(nvec.mean()) if nvec is not None else None,
        min_num_vectors=int(nvec.min()) if nvec is not None else None,
        max_num_vectors=int(nvec.max()) if nvec is not None else None,
        accuracy=int(s.correct.sum()) / n_labelled if n_labelled else None,
        late_requests=int((late > late_threshold_ms).sum()),
        max_late_ms=float(late.max()) if late.size else 0.0,
        client_cpu_percent=cpu_percent,
        errors=dict(s.first),
        samples=s,
        late_threshold_ms=late_threshold_ms,
        **counts,
    )
    _log_problems(res, late_threshold_ms)
    return res


def _summarise_client(client: Client, mode: str, wall_s: float, cpu_percent, **kw) -> LoadResult:
    return _summarise(
        Samples.from_recorder(client.rec),
        protocol=client.target.protocol,
        task=client.target.task,
        inputs_per_request=client.k,
        mode=mode,
        wall_s=wall_s,
        cpu_percent=cpu_percent,
        **kw,
    )


def _sum(values: list) -> Any:
    """The sum of the parts' values, or None when any part has none."""
    return None if any(v is None for v in values) else sum(values)


def merge_results(parts: list[LoadResult]) -> LoadResult:
    """One run out of several load generators' runs against one target at the same time.

    Latency percentiles and throughput come from the union of the raw samples (each part
    carries them), so a p99 is the p99 of every request, not an average of p99s. Counts,
    VUs, rates and client CPU add up; the duration is the longest part's.
    """
    if not parts:
        raise ValueError("merge_results needs at least one run")
    if any(p.samples is None for p in parts):
        raise ValueError("merge_results needs runs that kept their samples")
    head = parts[0]
    res = _summarise(
        Samples.concat([p.samples for p in parts]),
        protocol=head.protocol,
        task=head.task,
        inputs_per_request=head.inputs_per_request,
        mode=head.mode,
        wall_s=max(p.test_duration_sec for p in parts),
        cpu_percent=_sum([p.client_cpu_percent for p in parts]),
        dropped=sum(p.dropped for p in parts),
        unstarted=sum(p.unstarted for p in parts),
        late_threshold_ms=head.late_threshold_ms,
        vus=_sum([p.vus for p in parts]),
        iterations=_sum([p.iterations for p in parts]),
        target_rate=_sum([p.target_rate for p in parts]),
        max_concurrency=_sum([p.max_concurrency for p in parts]),
    )
    res.generator = head.generator
    res.ceiling_rps = _sum([p.ceiling_rps for p in parts])
    return res


def _log_problems(res: LoadResult, late_threshold_ms: float) -> None:
    if res.failed_requests:
        counts = {k: getattr(res, k) for k in FAILURE_KINDS}
        parts = ", ".join(f"{k}={counts[k]}" for k in FAILURE_KINDS if counts[k])
        first = next(iter(res.errors.values()), "")
        log.warning(
            "%d of %d requests failed (%s); first: %s",
            res.failed_requests,
            res.total_requests,
            parts,
            first,
        )
    if res.late_requests:
        log.warning(
            "%d of %d requests went out more than %g ms after their scheduled time (max %.1f ms)"
            "; latency is measured from the schedule",
            res.late_requests,
            res.total_requests,
            late_threshold_ms,
            res.max_late_ms,
        )


def warn_near_ceiling(res: LoadResult, ceiling_rps: float | None) -> None:
    """Record the ceiling on the result and warn when the run came within 50% of it."""
    res.ceiling_rps = ceiling_rps
    if ceiling_rps and res.requests_per_sec >= CEILING_FRACTION * ceiling_rps:
        log.warning(
            "the load generator ran at %.0f req/s, %.0f%% of its own ceiling (%.0f req/s against "
            "a no-op server): the client may be the bottleneck; send more inputs per request "
            "or run the client on another machine",
            res.requests_per_sec,
            100 * res.requests_per_sec / ceiling_rps,
            ceiling_rps,
        )


class _CpuClock:
    """CPU used by this process (the load generator) over a window, in % of one core."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        t = self._proc.cpu_times()
        self._cpu0, self._t0 = t.user + t.system, time.perf_counter()

    def percent(self) -> float:
        t = self._proc.cpu_times()
        wall = max(time.perf_counter() - self._t0, 1e-9)
        return (t.user + t.system - self._cpu0) / wall * 100


async def _until(epoch_s: float | None) -> None:
    """Sleep until this wall-clock time (a start shared by several load generators)."""
    if epoch_s is not None:
        late = time.time() - epoch_s
        if late > 0:
            log.warning("this load generator started %.0f ms after the shared start", late * 1e3)
        else:
            await asyncio.sleep(-late)


async def _cancel(pending) -> None:
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def arun_closed_loop(
    target: Target,
    workload: Workload,
    vus: int,
    iterations: int,
    max_duration_s: float = 60.0,
    inputs_per_request: int = 1,
    *,
    warmup_requests: int | None = None,
    ceiling_rps: float | None = None,
    check_reachable: bool = True,
    start_at: float | None = None,
) -> LoadResult:
    """k6 shared-iterations: `vus` users share `iterations` requests, stopping at max duration.

    Requests in flight at the deadline are cancelled and counted as `dropped`, iterations never
    started as `unstarted`. Warm-up defaults to one untimed request per VU; with `ceiling_rps`
    (from `measure_ceiling`) the run warns when it reaches 50% of it. `start_at` (epoch
    seconds): after the warm-up, wait until then, so several generators start together.
    """
    check_positive(
        vus=vus,
        iterations=iterations,
        max_duration_s=max_duration_s,
        inputs_per_request=inputs_per_request,
    )
    warm = vus if warmup_requests is None else warmup_requests
    async with connected(
        target,
        workload,
        inputs_per_request,
        limit=vus,
        warmup_requests=warm,
        check_reachable=check_reachable,
    ) as client:
        shared = itertools.count()  # k6 shared-iterations: each VU takes the next index
        started = 0

        async def vu() -> None:
            nonlocal started
            while (i := next(shared)) < iterations:
                started += 1
                await client.send(i)

        await _until(start_at)
        cpu = _CpuClock()
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(vu()) for _ in range(vus)]
        done, pending = await asyncio.wait(tasks, timeout=max_duration_s)
        dropped = client.inflight
        await _cancel(pending)
        wall, cpu_pct = time.perf_counter() - t0, cpu.percent()
        for t in done:
            t.result()  # a bug in the loop surfaces here, with its traceback
    if pending:
        log.info(
            "max duration %.0f s reached: %d of %d iterations started, %d in flight dropped",
            max_duration_s,
            started,
            iterations,
            dropped,
        )
    res = _summarise_client(
        client,
        "closed",
        wall,
        cpu_pct,
        dropped=dropped,
        unstarted=iterations - started,
        late_threshold_ms=math.inf,
        vus=vus,
        iterations=iterations,
    )
    warn_near_ceiling(res, ceiling_rps)
    return res


def _poisson_offsets_ns(rate: float, duration_s: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    expected = rate * duration_s
    n = int(expected + 6 * math.sqrt(expected) + 16)
    while True:
        t = np.cumsum(rng.exponential(1.0 / rate, n))
        if t[-1] >= duration_s:
            return (t[t < duration_s] * 1e9).astype(np.int64)
        n *= 2


async def _send_on_schedule(
    client: Client, offsets: np.ndarray, t0: int, hard: int, max_concurrency: int
) -> tuple[int, set[asyncio.Task]]:
    """Send batch i at t0 + offsets[i] with at most `max_concurrency` in flight, until `hard`
    (ns); returns how many were sent and those still in flight at `hard` (cancelled)."""
    slots = asyncio.Semaphore(max_concurrency)
    tasks: set[asyncio.Task] = set()

    async def fire(i: int, sched: int) -> None:
        try:
            await client.send(i, sched_ns=sched)
        finally:
            slots.release()

    sent = 0
    for i, off in enumerate(offsets.tolist()):
        sched = t0 + off
        delay = sched - time.perf_counter_ns()
        if delay > 0:
            await asyncio.sleep(delay / 1e9)
        left = (hard - time.perf_counter_ns()) / 1e9
        if left <= 0:
            break
        if slots.locked():  # at the concurrency cap: wait, and the request goes out late
            try:
                await asyncio.wait_for(slots.acquire(), left)
            except asyncio.TimeoutError:
                break
        else:
            await slots.acquire()
        task = asyncio.create_task(fire(i, sched))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    pending: set[asyncio.Task] = set()
    if tasks:
        left = max((hard - time.perf_counter_ns()) / 1e9, 0.0)
        _, pending = await asyncio.wait(set(tasks), timeout=left)
    await _cancel(pending)
    return sent, pending


async def arun_open_loop(
    target: Target,
    workload: Workload,
    rate: float,
    duration_s: float,
    inputs_per_request: int = 1,
    max_concurrency: int = 64,
    *,
    max_duration_s: float | None = None,
    late_threshold_ms: float = 1.0,
    seed: int = 0,
    warmup_requests: int | None = None,
    ceiling_rps: float | None = None,
    check_reachable: bool = True,
    start_at: float | None = None,
) -> LoadResult:
    """Poisson arrivals at `rate` requests/s for `duration_s`, at most `max_concurrency` in flight.

    Latency runs from each request's scheduled send time; requests sent more than
    `late_threshold_ms` after it are counted in `late_requests`. At `max_duration_s` (default
    2 x duration + min(timeout, 30 s)) unsent arrivals are `unstarted`, in-flight ones `dropped`.
    `start_at` (epoch seconds): the first arrival's time, after the warm-up.
    """
    check_positive(
        rate=rate,
        duration_s=duration_s,
        inputs_per_request=inputs_per_request,
        max_concurrency=max_concurrency,
    )
    if max_duration_s is None:
        max_duration_s = 2 * duration_s + min(target.timeout_s, 30.0)
    if max_duration_s < duration_s:
        raise ConfigError(f"max_duration_s ({max_duration_s}) must be >= duration_s ({duration_s})")
    offsets = _poisson_offsets_ns(rate, duration_s, seed)
    warm = min(max_concurrency, 16) if warmup_requests is None else warmup_requests
    async with connected(
        target,
        workload,
        inputs_per_request,
        limit=max_concurrency,
        warmup_requests=warm,
        check_reachable=check_reachable,
    ) as client:
        await _until(start_at)
        cpu = _CpuClock()
        t0 = time.perf_counter_ns() + 1_000_000
        hard = t0 + int(max_duration_s * 1e9)
        sent, pending = await _send_on_schedule(client, offsets, t0, hard, max_concurrency)
        wall, cpu_pct = (time.perf_counter_ns() - t0) / 1e9, cpu.percent()
    res = _summarise_client(
        client,
        "open",
        wall,
        cpu_pct,
        dropped=len(pending),
        unstarted=len(offsets) - sent,
        late_threshold_ms=late_threshold_ms,
        target_rate=rate,
        max_concurrency=max_concurrency,
    )
    warn_near_ceiling(res, ceiling_rps)
    return res


def run_sync(coro):
    """Run a coroutine to completion on a fresh event loop (uvloop when installed)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coro.close()
        raise RuntimeError("called inside a running event loop; await arun_closed_loop/...")
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def check_positive(**values: float) -> None:
    """ConfigError naming the first argument that is not > 0."""
    for name, v in values.items():
        if not v > 0:
            raise ConfigError(f"{name} must be > 0; got {v}")


def _blocking(arun: Callable[..., Awaitable[LoadResult]]) -> Callable[..., LoadResult]:
    """The blocking form of an async loop, with its signature and docstring."""

    @functools.wraps(arun)
    def run(*args: Any, **kwargs: Any) -> LoadResult:
        return run_sync(arun(*args, **kwargs))

    run.__name__ = run.__qualname__ = arun.__name__.removeprefix("a")
    return run


run_closed_loop = _blocking(arun_closed_loop)
run_open_loop = _blocking(arun_open_loop)
