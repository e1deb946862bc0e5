"""Bulk inference: a whole dataset through one engine as one job, outputs in input order.

What `harness.run --scenario offline` measures and `python -m harness.job` runs on a user's
file. The inputs come as windows (`Window`: consecutive inputs, one chunk of the output). A
tokenizer thread tokenizes a window, sorts it by token count, packs it into batches capped by a
count and by a padded-token budget at the shape the engine computes (`Engine.forward_shape`:
fixed-shape engines round up to a profile or bucket) and puts the collated batches on a bounded
queue. The calling thread runs them back to back (`infer`, `postprocess`) and puts each output
at its input's place, so a window's outputs come back in input order once its last batch has
run; while the engine runs window k the tokenizer prepares window k + 1. The runner talks to the
engine only through its batching protocol, as the dynamic batcher does.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.config import arg
from core.errors import ConfigError, EngineError
from engines.base import Engine

#: (inputs, longest) -> the (inputs, tokens) shape a forward computes, or None: none holds it
Shape = Callable[[int, int], "tuple[int, int] | None"]


def free_shape(batch: int, seq: int) -> tuple[int, int]:
    """A free-shape engine computes the batch as it is padded: to its longest input."""
    return batch, seq


@dataclass(frozen=True)
class JobLimits:
    """How a job packs its batches; a pure value."""

    max_batch_size: int = arg(32, help="inputs per forward pass")
    max_batch_tokens: int = arg(
        16384,
        help="padded tokens per forward pass: inputs x the longest of them, at the shape the "
        "engine computes (fixed-shape engines: their next profile or bucket)",
    )
    max_batch_padding: float = arg(
        0.05,
        help="the padding fraction a batch may carry beyond what the engine's fixed shapes add: "
        "a batch ends early rather than pad more (1: fill every batch to the caps)",
    )
    truncate: bool = arg(
        True,
        negate=("--no-truncate",),
        help="cut inputs at the model's length; --no-truncate refuses longer ones",
    )
    #: collated batches that may wait for the engine (bounds the memory the tokenizer runs ahead)
    queue_batches: int = arg(16, cli=False, help="")

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_batch_tokens", "queue_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be an integer >= 1; got {value!r}")
        pad = self.max_batch_padding
        if isinstance(pad, bool) or not isinstance(pad, (int, float)) or not 0 <= pad <= 1:
            raise ConfigError(f"--max-batch-padding must be a number in [0, 1]; got {pad!r}")


def plan_batches(
    lengths: Sequence[int],
    max_batch_size: int,
    max_batch_tokens: int,
    shape: Shape = free_shape,
    max_padding: float = 1.0,
) -> list[list[int]]:
    """Indices into `lengths`, longest first, packed into batches: each as many inputs as the
    count cap, the token budget (at the computed shape) and `max_padding` allow.

    Sorting by length leaves each batch little padding; the longest come first, so a batch too
    big for memory fails at once. `max_padding` caps the padding a batch carries at its own
    longest input (the shapes a fixed-shape engine rounds up to add theirs on top): where the
    lengths thin out (a long tail) batches end early instead of padding more. An input over the
    budget on its own still forms a batch; one no shape holds is refused."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    i, n = 0, len(order)
    while i < n:
        longest = lengths[order[i]]
        if shape(1, longest) is None:
            raise EngineError(
                f"the engine takes no shape that holds an input of {longest} tokens; lower "
                "--max-seq-len or re-export the artifact with longer shapes"
            )
        j, useful = i + 1, longest
        while j < n and j - i < max_batch_size:
            got = shape(j - i + 1, longest)
            if got is None or got[0] * got[1] > max_batch_tokens:
                break
            nxt = lengths[order[j]]
            if useful + nxt < (1 - max_padding) * (j - i + 1) * longest:
                break
            useful += nxt
            j += 1
        batches.append(order[i:j])
        i = j
    return batches


@dataclass(frozen=True)
class Window:
    """Consecutive inputs of a job: `start` is the index of the first one."""

    start: int
    inputs: list[str]


@dataclass
class WindowResult:
    """A window's outputs, in input order: probabilities (+ labels) or embeddings."""

    start: int
    values: np.ndarray
    labels: list[str] | None
    truncated: int  # inputs cut at the model's length

    def __len__(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True)
class BatchRecord:
    """One forward pass of a job (perf_counter_ns stamps)."""

    ready: int  # the engine took the batch off the queue
    forward_end: int
    done: int  # post-processed, outputs in place
    inputs: int
    tokens: int  # real tokens
    computed: int  # token slots the forward computes (at the engine's shape)
    invalid: int  # outputs with NaN/Inf

    @property
    def forward_ns(self) -> int:
        return self.forward_end - self.ready


@dataclass
class JobStats:
    """What a job did: its batches, windows and how long the engine waited for the tokenizer."""

    started: int = 0  # perf_counter_ns when the job began
    batches: list[BatchRecord] = field(default_factory=list)
    window_done: list[int] = field(default_factory=list)  # ns, each window's outputs in order
    window_inputs: list[int] = field(default_factory=list)
    engine_wait_ns: int = 0  # waiting on the tokenizer after the first batch
    tokenize_ns: int = 0  # the tokenizer thread's time tokenizing, sorting and collating

    @property
    def inputs(self) -> int:
        return sum(self.window_inputs)

    @property
    def elapsed_s(self) -> float:
        return (self.window_done[-1] - self.started) / 1e9 if self.window_done else 0.0

    @property
    def padding_ratio(self) -> float:
        computed = sum(b.computed for b in self.batches)
        return 1.0 - sum(b.tokens for b in self.batches) / computed if computed else 0.0


class _Begin:
    """A window's batches follow."""

    def __init__(self, window: Window):
        self.window = window


class _End:
    """The last batch of a window has been queued."""


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()  # no more windows


class BulkRunner:
    """Runs windows of inputs through a loaded engine; see the module docstring."""

    def __init__(self, engine: Engine, limits: JobLimits | None = None):
        self.engine = engine
        self.limits = limits or JobLimits()
        if engine.spec.task not in ("classification", "embedding") or engine.spec.multi_vector:
            raise ConfigError(
                f"offline jobs run text classifiers and single-vector embedders; "
                f"{engine.spec.name} is a {engine.spec.task} model"
                + (" with several vectors per input" if engine.spec.multi_vector else "")
            )

    def run(
        self,
        windows: Iterable[Window],
        on_window: Callable[[WindowResult], bool | None],
        on_batch: Callable[[int], None] | None = None,
    ) -> JobStats:
        """Run every window; `on_window` gets each window's outputs, in window order, and may
        return True to stop the job there; `on_batch(inputs)` is called after each batch."""
        stats = JobStats(started=time.perf_counter_ns())
        q: queue.Queue = queue.Queue(maxsize=self.limits.queue_batches)
        stop = threading.Event()
        producer = threading.Thread(
            target=self._produce, args=(windows, q, stop, stats), daemon=True, name="bb-tokenize"
        )
        producer.start()
        try:
            self._consume(q, stats, on_window, on_batch)
        finally:
            stop.set()
            while producer.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    producer.join(0.05)
        return stats

    # ---- the tokenizer thread
    def _produce(self, windows: Iterable[Window], q: queue.Queue, stop, stats: JobStats) -> None:
        limits, engine = self.limits, self.engine
        try:
            for w in windows:
                if stop.is_set():
                    return
                t0 = time.perf_counter_ns()
                items = engine.tokenize(w.inputs, truncate=limits.truncate)
                lengths = [len(x) for x in items]
                shape = engine.forward_shape
                plan = plan_batches(
                    lengths,
                    limits.max_batch_size,
                    limits.max_batch_tokens,
                    shape,
                    limits.max_batch_padding,
                )
                batches = []
                for idx in plan:
                    batch = engine.collate([items[i] for i in idx], [w.inputs[i] for i in idx])
                    b, s = batch.inputs["input_ids"].shape
                    rows, cols = shape(b, s) or (b, s)
                    batches.append((idx, batch, rows * cols))
                stats.tokenize_ns += time.perf_counter_ns() - t0
                for item in (_Begin(w), *batches, _End()):
                    if not _put(q, item, stop):
                        return
            _put(q, _DONE, stop)
        except BaseException as e:  # noqa: BLE001 - raised again on the engine's thread
            _put(q, _Failed(e), stop)

    # ---- the engine's thread (the caller's)
    def _consume(self, q: queue.Queue, stats: JobStats, on_window, on_batch) -> None:
        engine = self.engine
        window: Window | None = None
        values: np.ndarray | None = None
        labels: list[str] | None = None
        truncated = 0
        first = True
        while True:
            asked = time.perf_counter_ns()
            item = q.get()
            ready = time.perf_counter_ns()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            if isinstance(item, _Begin):
                window, values, labels, truncated = item.window, None, None, 0
                continue
            assert window is not None
            if isinstance(item, _End):
                if values is None:  # a window is never empty: its batches ran
                    raise EngineError(f"the window at input {window.start} ran no batch")
                result = WindowResult(window.start, values, labels, truncated)
                stats.window_done.append(time.perf_counter_ns())
                stats.window_inputs.append(len(window.inputs))
                if on_window(result):
                    return
                continue
            if not first:
                stats.engine_wait_ns += ready - asked
            first = False
            idx, batch, computed = item
            out = engine.infer(batch.inputs)
            forward_end = time.perf_counter_ns()
            pred = engine.postprocess(out, batch)
            if pred.lengths is not None:
                raise EngineError("offline jobs take one output per input; got several vectors")
            if values is None:
                window_n = len(window.inputs)
                values = np.empty((window_n, *pred.values.shape[1:]), dtype=np.float32)
                labels = [""] * window_n if pred.labels is not None else None
            values[idx] = pred.values
            if labels is not None and pred.labels is not None:
                for i, lab in zip(idx, pred.labels, strict=True):
                    labels[i] = lab
            truncated += batch.truncated
            flat = pred.values.reshape(len(idx), -1)
            invalid = int((~np.isfinite(flat)).any(axis=1).sum())
            done = time.perf_counter_ns()
            stats.batches.append(
                BatchRecord(
                    ready, forward_end, done, len(idx), int(batch.n_tokens.sum()), computed, invalid
                )
            )
            if on_batch is not None:
                on_batch(len(idx))


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put `item`, waiting while the queue is full; False when the job stopped meanwhile."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
