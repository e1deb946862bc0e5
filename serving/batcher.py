"""Dynamic batcher: many small requests in, back-to-back length-aware forward passes out.

Three kinds of threads share the work so the forward pass never waits on Python pre/post work:
callers tokenize their own request (`submit`; `asubmit` uses a small pool), one forward thread
forms padded batches and calls `engine.infer`, and one post-processing thread runs
`engine.postprocess` and hands each request its slice of the results. The batcher talks to the
engine only through its batching protocol: `tokenize` (each input checked and tokenized once),
`collate`, `infer`, `postprocess`. Which queued inputs form
the next batch is `serving.policy`'s decision; this module owns the threads, lock and clock.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import concurrent.futures
import itertools
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.config import arg
from core.errors import BillionbenchError, ConfigError, EngineError
from core.measure import Latency
from engines.base import Engine
from engines.pipeline import Batch, Prediction
from serving import cpu
from serving.policy import (
    MICRO_BATCH_DEVICES,
    BatchLimits,
    select_batch,
    split_micro_batches,
)

log = logging.getLogger(__name__)

_RECENT = 10_000  # latency samples kept for the stats (most recent first to go)
_POST_QUEUE_BATCHES = 4  # formed batches that may wait for post-processing (bounds memory)
MICRO_BATCHES = ("auto", "on", "off")


@dataclass(frozen=True)
class BatcherConfig:
    """How requests are grouped into forward passes; a pure value."""

    max_batch_size: int = arg(32, help="inputs per forward pass (the server's max batch)")
    max_batch_tokens: int = arg(
        16384, help="padded tokens per forward pass (batch x longest input)"
    )
    max_queue_delay_ms: float = arg(
        2.0, help="how long the oldest input may wait for its batch to fill"
    )
    max_queue_inputs: int = arg(
        4096,
        aliases=("--max-queue",),
        help="inputs waiting before new requests get 429 + Retry-After",
    )
    max_request_inputs: int = arg(256, help="inputs per request")
    length_aware: bool = arg(
        True,
        negate=("--no-length-aware", "--fifo"),
        help="group inputs of similar length into a batch; --no-length-aware (old name --fifo) "
        "batches in plain FIFO order",
    )
    tokenize_workers: int = arg(2, cli=False, help="threads that tokenize for `asubmit`")
    # split each batch into near-equal-length micro-batches run back to back: "auto" does it
    # where the device default says so (CPU) for engines that compute a model; "on" / "off"
    micro_batches: str = arg(
        "auto",
        choices=MICRO_BATCHES,
        help="run each batch as near-equal-length micro-batches, back to back (auto: on CPU)",
    )
    micro_batch_padding: float = arg(0.05, help="the padding fraction one micro-batch may carry")

    def __post_init__(self) -> None:
        for name, lo, hi in (
            ("max_batch_size", 1, 65536),
            ("max_batch_tokens", 1, 2**31 - 1),
            ("max_queue_inputs", 1, 2**31 - 1),
            ("max_request_inputs", 1, 2**31 - 1),
            ("tokenize_workers", 1, 64),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"{name} must be an integer in [{lo}, {hi}]; got {value!r}")
        delay = self.max_queue_delay_ms
        if (
            isinstance(delay, bool)
            or not isinstance(delay, (int, float))
            or not math.isfinite(delay)
            or not 0 <= delay <= 60_000
        ):
            raise ConfigError(f"max_queue_delay_ms must be a number in [0, 60000]; got {delay!r}")
        if self.micro_batches not in MICRO_BATCHES:
            raise ConfigError(
                f"micro_batches must be one of {', '.join(MICRO_BATCHES)}; "
                f"got {self.micro_batches!r}"
            )
        pad = self.micro_batch_padding
        if isinstance(pad, bool) or not isinstance(pad, (int, float)) or not 0 <= pad < 1:
            raise ConfigError(f"micro_batch_padding must be a number in [0, 1); got {pad!r}")
        if not isinstance(self.length_aware, bool):
            raise ConfigError(f"length_aware must be True or False; got {self.length_aware!r}")


class QueueFull(BillionbenchError):
    """The queue has no room for this request now; retry after `retry_after_s` (HTTP 429)."""

    def __init__(self, retry_after_s: float, reason: str):
        super().__init__(f"{reason}; retry after {retry_after_s:.3f} s")
        self.retry_after_s = retry_after_s
        self.reason = reason


class RequestTooLarge(ValueError):
    """A request carries more inputs than the batcher takes at once (HTTP 413)."""


class BatcherStopped(EngineError):
    """The batcher is not running, or stopped before this request could run (HTTP 503)."""


@dataclass(frozen=True)
class BatcherStats:
    """A snapshot of the batcher's counters; padding_ratio = 1 - useful / padded tokens."""

    queue_depth: int  # inputs admitted and not yet in a batch
    pending_requests: int  # requests accepted and not yet resolved
    requests_completed: int
    requests_failed: int
    rejected: int  # requests refused with QueueFull
    batches: int
    failed_batches: int
    inputs: int  # inputs that went through a forward pass (or its attempt)
    batch_size_histogram: dict[int, int]
    useful_tokens: int
    padded_tokens: int
    padding_ratio: float
    forward_ms: Latency  # engine.infer only
    queue_wait_ms: Latency  # per input: admitted -> placed in a batch
    # cumulative per request, as Triton's statistics extension counts: the wait of a request's
    # first input for a batch, and the forward pass of that batch (shared by its requests)
    request_queue_ns_total: int = 0
    request_forward_ns_total: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.inputs / self.batches if self.batches else 0.0


class _Request:
    """One client request: resolves exactly once, with all its rows or with one exception."""

    __slots__ = ("future", "items", "rows", "labels", "remaining", "done", "lock")

    def __init__(self, n: int):
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.items: list[_Item] = []
        self.rows: list[np.ndarray | None] = [None] * n
        self.labels: list[str] | None = None
        self.remaining = n
        self.done = False
        self.lock = threading.Lock()

    def deliver(self, index: int, row: np.ndarray, label: str | None) -> Prediction | None:
        """Store one row; returns the finished Prediction when this was the last one."""
        with self.lock:
            if self.done:
                return None
            self.rows[index] = row
            if label is not None:
                if self.labels is None:
                    self.labels = [""] * len(self.rows)
                self.labels[index] = label
            self.remaining -= 1
            if self.remaining:
                return None
            rows = self.rows
            # multi-vector rows arrive trimmed to their real vectors: keep their counts
            lengths = np.asarray([r.shape[0] for r in rows]) if rows[0].ndim == 2 else None
            result = Prediction(_stack(rows), self.labels, lengths)  # may raise: then not done
            self.done = True
            return result

    def claim_failure(self) -> bool:
        """True exactly once, for the caller that may now fail this request."""
        with self.lock:
            if self.done:
                return False
            self.done = True
            return True


class _Item:
    """One input of a request, waiting for a batch."""

    __slots__ = ("seq", "request", "index", "text", "ids", "n", "t_ns")

    def __init__(self, seq: int, request: _Request, index: int, text: str, ids: list[int]):
        self.seq = seq
        self.request = request
        self.index = index
        self.text = text
        self.ids = ids
        self.n = len(ids)
        self.t_ns = 0


def _stack(rows: list[Any]) -> np.ndarray:
    shapes = {r.shape for r in rows}
    if len(shapes) == 1:
        return np.stack(rows)
    # multi-vector rows from different batches differ in length: zero-pad to the longest
    out = np.zeros((len(rows), *np.max([r.shape for r in rows], axis=0)), dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[(i, *(slice(0, d) for d in r.shape))] = r
    return out


def _micro_padding(config: BatcherConfig, engine: Engine) -> float | None:
    """The padding bound of micro-batches for this engine, or None when batches are not split."""
    if config.micro_batches == "off":
        return None
    if config.micro_batches == "on":
        return config.micro_batch_padding
    # the fake engine computes nothing, so padding costs it nothing: keep its batches whole
    if engine.config.device not in MICRO_BATCH_DEVICES or not engine.computes_model:
        return None
    return config.micro_batch_padding


def _set_result(request: _Request, result: Prediction) -> None:
    try:
        request.future.set_result(result)
    except concurrent.futures.InvalidStateError:  # the client cancelled it
        pass


def _set_exception(request: _Request, exc: BaseException) -> None:
    try:
        request.future.set_exception(exc)
    except concurrent.futures.InvalidStateError:
        pass


class DynamicBatcher:
    """Queue requests, run them in length-aware batches on one engine, resolve each once.

    The engine must be loaded; the batcher never closes it.
    """

    def __init__(self, engine: Engine, config: BatcherConfig):
        if not engine.loaded:
            raise EngineError("load the engine before creating a DynamicBatcher")
        self.engine = engine
        self.config = config
        self._delay_ns = int(config.max_queue_delay_ms * 1e6)
        self._limits = BatchLimits(
            config.max_batch_size, config.max_batch_tokens, config.length_aware
        )
        self._micro_padding = _micro_padding(config, engine)
        self._cond = threading.Condition(threading.Lock())
        # guarded by _cond: waiting items in arrival order, the same keyed by (tokens, seq)
        self._fifo: collections.OrderedDict[int, _Item] = collections.OrderedDict()
        self._by_len: list[tuple[int, int]] = []
        self._queued = 0  # admitted inputs not yet in a batch, incl. those being tokenized
        self._live: set[_Request] = set()
        self._accepting = False
        self._stopping = False
        self._started = False
        self._drain_deadline_ns = 0
        self._seq = itertools.count()
        self._post_q: queue.Queue = queue.Queue(maxsize=_POST_QUEUE_BATCHES)
        self._threads: list[threading.Thread] = []
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        # counters, guarded by _stats_lock
        self._stats_lock = threading.Lock()
        self._batches = self._failed_batches = self._inputs = 0
        self._completed = self._failed = self._rejected = 0
        self._useful = self._padded = 0
        self._request_queue_ns = self._request_forward_ns = 0
        self._hist: collections.Counter[int] = collections.Counter()
        self._forward_ns: collections.deque[int] = collections.deque(maxlen=_RECENT)
        self._wait_ns: collections.deque[int] = collections.deque(maxlen=_RECENT)
        self._rate: float | None = None  # inputs/s the forward pass sustains (EWMA)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the forward and post-processing threads; submits are accepted from now on."""
        with self._cond:
            if self._started:
                raise EngineError("a DynamicBatcher can be started only once")
            self._started = self._accepting = True
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.config.tokenize_workers,
            thread_name_prefix="batcher-tokenize",
            initializer=cpu.register_other,
        )
        self._threads = [
            threading.Thread(target=self._forward_loop, name="batcher-forward", daemon=True),
            threading.Thread(target=self._post_loop, name="batcher-post", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, run what is queued for up to `timeout_s`, fail whatever is left."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        with self._cond:
            self._accepting = False
            self._stopping = True
            self._drain_deadline_ns = time.perf_counter_ns() + int(max(timeout_s, 0.0) * 1e9)
            self._cond.notify_all()
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # queued asubmit work rejects itself quickly
        forward, post = self._threads or (None, None)
        if forward is not None:
            forward.join(max(deadline - time.monotonic(), 0.0))
            try:
                self._post_q.put(None, timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Full:
                pass
            post.join(max(deadline - time.monotonic(), 0.0))
            if forward.is_alive() or post.is_alive():
                log.warning(
                    "batcher threads still busy after %.1f s; failing their requests", timeout_s
                )
        with self._cond:
            left = list(self._live)
            self._live.clear()
            for item in list(self._fifo.values()):
                self._remove_locked(item)
        self._fail(left, BatcherStopped("the batcher stopped before this request finished"))

    def __enter__(self) -> DynamicBatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- submitting ---------------------------------------------------------------------------
    def submit(self, texts: list[str], *, truncate: bool = True) -> concurrent.futures.Future:
        """Tokenize in this thread and queue; the future resolves to a Prediction for `texts`.

        Raises at once: ConfigError (bad inputs), RequestTooLarge, QueueFull, BatcherStopped.
        """
        n = self._admit(texts)
        return self._tokenize_and_enqueue(texts, n, truncate)

    async def asubmit(self, texts: list[str], *, truncate: bool = True) -> Prediction:
        """`submit` for asyncio: tokenizes on the batcher's small pool, never on the loop."""
        n = self._admit(texts)
        assert self._pool is not None  # _admit refuses before start()
        try:
            staged = self._pool.submit(self._tokenize_and_enqueue, texts, n, truncate)
        except RuntimeError as e:  # pool shut down by a concurrent stop()
            self._release(n)
            raise BatcherStopped("the batcher is stopping") from e
        try:
            inner = await asyncio.wrap_future(staged)
        except asyncio.CancelledError:
            staged.add_done_callback(lambda f, n=n: self._abandon(f, n))
            raise
        return await asyncio.wrap_future(inner)

    def _admit(self, texts: list[str]) -> int:
        # how many inputs: each one is checked once, when the engine tokenizes it
        if isinstance(texts, (str, bytes)) or not isinstance(texts, (list, tuple)) or not texts:
            raise ConfigError("inputs must be a non-empty list")
        n = len(texts)
        cfg = self.config
        for name, limit in (
            ("max_request_inputs", cfg.max_request_inputs),
            ("max_queue_inputs", cfg.max_queue_inputs),  # could never be admitted: not a 429
        ):
            if n > limit:
                raise RequestTooLarge(
                    f"{n} inputs in one request; the limit is {name}={limit}: split it"
                )
        with self._cond:
            if not self._accepting:
                raise BatcherStopped("the batcher is not running")
            if self._queued + n > cfg.max_queue_inputs:
                depth = self._queued
                rejected = True
            else:
                self._queued += n
                rejected = False
        if rejected:
            with self._stats_lock:
                self._rejected += 1
                rate = self._rate
            wait = depth / rate if rate else max(0.1, 2 * cfg.max_queue_delay_ms / 1e3)
            raise QueueFull(
                min(max(wait, 0.001), 30.0),
                f"queue full: {depth} inputs waiting, {n} more would exceed "
                f"max_queue_inputs={cfg.max_queue_inputs}",
            )
        return n

    def _release(self, n: int) -> None:
        with self._cond:
            self._queued -= n

    def _tokenize_and_enqueue(
        self, texts: list[str], n: int, truncate: bool
    ) -> concurrent.futures.Future:
        try:
            if not self._accepting:
                raise BatcherStopped("the batcher stopped before this request was queued")
            ids = self.engine.tokenize(texts, truncate=truncate)
        except BaseException:
            self._release(n)
            raise
        request = _Request(n)
        with self._cond:
            if not self._accepting:
                self._queued -= n
                raise BatcherStopped("the batcher stopped before this request was queued")
            now = time.perf_counter_ns()
            for i, (text, row) in enumerate(zip(texts, ids, strict=True)):
                item = _Item(next(self._seq), request, i, text, row)
                item.t_ns = now
                request.items.append(item)
                self._fifo[item.seq] = item
                bisect.insort(self._by_len, (item.n, item.seq))
            self._live.add(request)
            self._cond.notify_all()
        request.future.add_done_callback(lambda f, r=request: self._on_done(f, r))
        return request.future

    def _abandon(self, staged: concurrent.futures.Future, n: int) -> None:
        # an asubmit was cancelled while its request was still being tokenized
        if staged.cancelled():
            self._release(n)
        elif staged.exception() is None:
            staged.result().cancel()

    def _on_done(self, future: concurrent.futures.Future, request: _Request) -> None:
        if future.cancelled() and request.claim_failure():
            with self._cond:
                self._discard_locked(request)

    # -- the forward thread -------------------------------------------------------------------
    def _forward_loop(self) -> None:
        try:
            while True:
                chosen = self._next_batch()
                if chosen is None:
                    return
                self._run_batch(chosen)
        except BaseException as e:  # a bug here must not leave futures hanging
            log.exception("batcher forward thread crashed")
            with self._cond:
                self._accepting = False
                left = list(self._live)
            self._fail(left, EngineError(f"the batcher's forward thread crashed: {e!r}"))

    def _next_batch(self) -> list[_Item] | None:
        """Wait until a batch is full or its oldest input has waited long enough; take it."""
        with self._cond:
            while True:
                if self._stopping and time.perf_counter_ns() >= self._drain_deadline_ns:
                    return None  # stop() fails whatever is left
                if not self._fifo:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                queue = ((item.seq, item.n) for item in self._fifo.values())
                selection = select_batch(queue, self._limits, self._by_len)
                chosen = [self._fifo[seq] for seq in selection.seqs]
                oldest = chosen[0]
                wait_ns = oldest.t_ns + self._delay_ns - time.perf_counter_ns()
                if selection.full or wait_ns <= 0 or self._stopping:
                    now = time.perf_counter_ns()
                    for item in chosen:
                        self._remove_locked(item)
                    waits = [now - item.t_ns for item in chosen]
                    first_waits = sum(w for w, i in zip(waits, chosen, strict=True) if i.index == 0)
                    break
                self._cond.wait(wait_ns / 1e9)
        with self._stats_lock:
            self._wait_ns.extend(waits)
            self._request_queue_ns += first_waits
        return chosen

    def _remove_locked(self, item: _Item) -> None:
        del self._fifo[item.seq]
        i = bisect.bisect_left(self._by_len, (item.n, item.seq))
        del self._by_len[i]
        self._queued -= 1

    def _discard_locked(self, request: _Request) -> None:
        # a request that failed or was cancelled needs none of its remaining inputs run
        self._live.discard(request)
        for item in request.items:
            if item.seq in self._fifo:
                self._remove_locked(item)

    def _run_batch(self, chosen: list[_Item]) -> None:
        if self._micro_padding is None or len(chosen) < 2:
            self._run_micro_batch(chosen)
            return
        for group in split_micro_batches([i.n for i in chosen], self._micro_padding):
            self._run_micro_batch([chosen[j] for j in group])

    def _run_micro_batch(self, chosen: list[_Item]) -> None:
        try:
            batch = self.engine.collate([i.ids for i in chosen], [i.text for i in chosen])
        except Exception as e:
            self._post_q.put((chosen, None, None, e))
            return
        k = len(chosen)
        with self._stats_lock:
            self._batches += 1
            self._inputs += k
            self._hist[k] += 1
            self._useful += int(batch.n_tokens.sum())
            self._padded += batch.padded_tokens
        t0 = time.perf_counter_ns()
        try:
            outputs = self.engine.infer(batch.inputs)
        except Exception as e:
            log.warning("forward pass of %d inputs failed: %r", k, e)
            with self._stats_lock:
                self._failed_batches += 1
            self._post_q.put((chosen, batch, None, e))
            return
        dt = time.perf_counter_ns() - t0
        with self._stats_lock:
            self._forward_ns.append(dt)
            self._request_forward_ns += dt * sum(1 for i in chosen if i.index == 0)
            rate = k * 1e9 / max(dt, 1)
            self._rate = rate if self._rate is None else 0.8 * self._rate + 0.2 * rate
        self._post_q.put((chosen, batch, outputs, None))

    # -- the post-processing thread -----------------------------------------------------------
    def _post_loop(self) -> None:
        cpu.register_other()
        while True:
            msg = self._post_q.get()
            if msg is None:
                return
            chosen, batch, outputs, error = msg
            try:
                if error is None:
                    self._deliver(chosen, batch, outputs)
            except Exception as e:
                log.warning("post-processing of %d inputs failed: %r", len(chosen), e)
                error = e
            if error is not None:
                self._fail({item.request for item in chosen}, error)

    def _deliver(self, chosen: list[_Item], batch: Batch, outputs: Any) -> None:
        pred = self.engine.postprocess(outputs, batch)
        if len(pred.values) != len(chosen):
            raise EngineError(f"engine returned {len(pred.values)} rows for {len(chosen)} inputs")
        finished = []
        for j, item in enumerate(chosen):
            label = pred.labels[j] if pred.labels is not None else None
            row = pred.values[j] if pred.lengths is None else pred.values[j][: pred.lengths[j]]
            try:
                result = item.request.deliver(item.index, row, label)
            except Exception as e:  # e.g. rows that cannot be stacked: fail this request only
                self._fail([item.request], e)
                continue
            if result is not None:
                finished.append((item.request, result))
        if finished:
            with self._cond:
                for request, _ in finished:
                    self._live.discard(request)
            with self._stats_lock:
                self._completed += len(finished)
            for request, result in finished:
                _set_result(request, result)

    def _fail(self, requests: Any, error: BaseException) -> None:
        claimed = [r for r in requests if r.claim_failure()]
        if not claimed:
            return
        with self._cond:
            for request in claimed:
                self._discard_locked(request)
        with self._stats_lock:
            self._failed += len(claimed)
        for request in claimed:
            _set_exception(request, error)

    # -- stats --------------------------------------------------------------------------------
    def stats(self) -> BatcherStats:
        """A snapshot of the counters."""
        with self._cond:
            depth, pending = self._queued, len(self._live)
        with self._stats_lock:
            useful, padded = self._useful, self._padded
            counts = dict(
                requests_completed=self._completed,
                requests_failed=self._failed,
                rejected=self._rejected,
                batches=self._batches,
                failed_batches=self._failed_batches,
                inputs=self._inputs,
                batch_size_histogram=dict(sorted(self._hist.items())),
            )
            forward_ns, wait_ns = list(self._forward_ns), list(self._wait_ns)
            totals = dict(
                request_queue_ns_total=self._request_queue_ns,
                request_forward_ns_total=self._request_forward_ns,
            )
        return BatcherStats(
            queue_depth=depth,
            pending_requests=pending,
            **counts,
            useful_tokens=useful,
            padded_tokens=padded,
            padding_ratio=1.0 - useful / padded if padded else 0.0,
            forward_ms=Latency.from_ns(forward_ns),
            queue_wait_ms=Latency.from_ns(wait_ns),
            **totals,
        )


__all__ = [
    "BatcherConfig",
    "BatcherStats",
    "BatcherStopped",
    "DynamicBatcher",
    "QueueFull",
    "RequestTooLarge",
]
