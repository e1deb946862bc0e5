"""The in-process measurement loop (neuronperf-style): model copies x worker threads x batch sizes.

Every call records perf_counter_ns stamps around tokenize, forward and post-process, so the
forward-only latency (`latency_ms_*`, neuronperf's columns) and the end-to-end latency
(`*_latency_ms`, end to end) come from the same calls. Throughput counts inputs.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue as queue_mod
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.energy import Meter, Reading, start_meter, stop_meter
from core.errors import ConfigError, EngineError
from core.measure import Latency, Throughput
from engines.base import Engine, EngineConfig, ReportsServerStats
from engines.registry import create_engine
from workloads import Workload

log = logging.getLogger(__name__)

# start, tokenized, forward done, end (ns); inputs; useful tokens; padded tokens; invalid; correct;
# multi-vector outputs: fewest / most / total vectors; vision: pixels and visual tokens
_FIELDS = (
    "t0",
    "t1",
    "t2",
    "t3",
    "inputs",
    "tokens",
    "padded",
    "invalid",
    "correct",
    "labelled",
    "vec_min",
    "vec_max",
    "vec_sum",
    "pixels",
    "vtokens",
)


@dataclass(frozen=True)
class InprocessPoint:
    """One point of the in-process grid, and how long to measure it (the flags' names)."""

    inputs_per_request: int  # inputs per call: the client batch
    n_models: int = 1
    workers_per_model: int = 1
    duration: float = 5.0  # seconds
    min_calls: int = 10
    warmup: int = 2  # untimed calls per model copy
    max_duration: float | None = None  # seconds; default: 10 x duration + 120 s
    processes: bool = False

    def __post_init__(self) -> None:
        for name in ("inputs_per_request", "n_models", "workers_per_model"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be >= 1; got {getattr(self, name)}")
        if self.duration <= 0:
            raise ConfigError(f"--duration must be > 0 seconds; got {self.duration}")
        if self.min_calls < 1 or self.warmup < 0:
            raise ConfigError("--min-calls must be >= 1 and --warmup >= 0")

    @property
    def deadline_s(self) -> float:
        return self.max_duration or self.duration * 10 + 120


@dataclass
class InprocessResult:
    config: InprocessPoint
    e2e: Latency
    forward: Latency
    throughput: Throughput
    calls: int
    inputs: int
    useful_tokens: int
    padded_tokens: int
    invalid: int
    accuracy: float | None
    duration_s: float
    cpu_percent: float
    peak_rss_mb: float
    peak_gpu_mem_mb: float | None
    hit_deadline: bool
    engine_info: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)  # server_* columns (triton engine)
    #: multi-vector models: (min, avg, max) vectors per input over every timed call
    num_vectors: tuple[int, float, int] | None = None
    avg_pixels: float | None = None  # vision: decoded pixels per image
    avg_visual_tokens: float | None = None  # vision: merged visual tokens per image
    energy: Reading | None = None  # the meter's reading over the timed window, when given one

    @property
    def tokens_per_sec(self) -> float:
        return self.throughput.avg * (self.useful_tokens / max(self.inputs, 1))

    @property
    def padding_ratio(self) -> float:
        """Fraction of computed token slots that were padding."""
        return 1.0 - self.useful_tokens / self.padded_tokens if self.padded_tokens else 0.0


def _one_call(engine: Engine, texts: list[str], labels: list | None) -> tuple:
    t0 = time.perf_counter_ns()
    batch = engine.preprocess(texts)
    t1 = time.perf_counter_ns()
    out = engine.infer(batch.inputs)
    t2 = time.perf_counter_ns()
    pred = engine.postprocess(out, batch)
    t3 = time.perf_counter_ns()
    v = pred.values.reshape(pred.values.shape[0], -1)
    bad = (~np.isfinite(v)).any(axis=1)
    vec = (0, 0, 0)
    if pred.lengths is not None:  # multi-vector: every input needs >= 1 vector of the model's dim
        lens = np.asarray(pred.lengths)
        bad |= (lens < 1) | (pred.values.shape[-1] != engine.spec.dim)
        vec = (int(lens.min()), int(lens.max()), int(lens.sum()))
    invalid = int(bad.sum())
    correct = labelled = 0
    if labels is not None and pred.labels is not None:
        for lab, got in zip(labels, pred.labels, strict=True):
            if lab is None:
                continue
            labelled += 1
            want = (
                engine.spec.labels[lab]
                if isinstance(lab, (int, np.integer)) and 0 <= lab < len(engine.spec.labels)
                else str(lab)
            )
            correct += int(want == got)
    return (
        t0,
        t1,
        t2,
        t3,
        batch.size,
        int(batch.n_tokens.sum()),
        batch.padded_tokens,
        invalid,
        correct,
        labelled,
        *vec,
        int(batch.pixels.sum()) if batch.pixels is not None else 0,
        int(batch.visual_tokens.sum()) if batch.visual_tokens is not None else 0,
    )


def _drive(
    engine: Engine,
    workload: Workload,
    cfg: InprocessPoint,
    model_idx: int,
    go,
    stop,
    counter,
    errors: list,
) -> tuple[list[threading.Thread], list[list]]:
    """Start `workers_per_model` threads feeding one engine; each waits for `go`."""
    sinks: list[list] = []
    threads = []
    stride = cfg.n_models * cfg.workers_per_model
    for w in range(cfg.workers_per_model):
        sink: list = []
        sinks.append(sink)
        first = model_idx * cfg.workers_per_model + w

        def loop(sink=sink, index=first):
            go.wait()
            try:
                while not stop.is_set():
                    texts, labels = workload.batch(index, cfg.inputs_per_request)
                    sink.append(_one_call(engine, texts, labels))
                    index += stride
                    with counter.get_lock():
                        counter.value += 1
            except BaseException as e:  # surfaced by the controller, with its cause
                errors.append(e)
                stop.set()

        t = threading.Thread(target=loop, daemon=True, name=f"model{model_idx}-w{w}")
        t.start()
        threads.append(t)
    return threads, sinks


def _warm(engine: Engine, workload: Workload, cfg: InprocessPoint) -> None:
    for i in range(cfg.warmup):
        _one_call(engine, *workload.batch(i, cfg.inputs_per_request))


def gpu_peak_mb() -> float | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def _child(
    engine_cfg: EngineConfig,
    workload: Workload,
    cfg: InprocessPoint,
    model_idx: int,
    ready,
    go,
    stop,
    counter,
    out_q,
) -> None:
    """Process mode: one model copy per process, its worker threads inside it."""
    errors: list = []
    try:
        engine = create_engine(engine_cfg)
        engine.load()
        _warm(engine, workload, cfg)
    except BaseException as e:
        out_q.put((model_idx, None, f"{type(e).__name__}: {e}", {}, None))
        ready.wait()
        return
    ready.wait()
    threads, sinks = _drive(engine, workload, cfg, model_idx, go, stop, counter, errors)
    for t in threads:
        t.join()
    err = f"{type(errors[0]).__name__}: {errors[0]}" if errors else None
    out_q.put((model_idx, [r for s in sinks for r in s], err, engine.info, gpu_peak_mb()))
    engine.close()


class Sampler:
    """CPU% and peak RSS of this process and its children while the timed window runs."""

    def __init__(self, period_s: float = 0.1):
        import psutil

        self._proc = psutil.Process()
        self._period = period_s
        self._stop = threading.Event()
        self.peak_rss = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _procs(self):
        try:
            return [self._proc, *self._proc.children(recursive=True)]
        except Exception:
            return [self._proc]

    def _cpu(self) -> float:
        total = 0.0
        for p in self._procs():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except Exception:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = 0
            for p in self._procs():
                try:
                    rss += p.memory_info().rss
                except Exception:
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            self._stop.wait(self._period)

    def start(self) -> None:
        self._cpu0, self._t0 = self._cpu(), time.perf_counter()
        self._thread.start()

    def stop(self) -> float:
        cpu = (self._cpu() - self._cpu0) / max(time.perf_counter() - self._t0, 1e-9) * 100
        self._stop.set()
        self._thread.join()
        return cpu


class _Copies:
    """The model copies of one point, started and waiting for `go`: threads or processes."""

    def __init__(self, engine_cfg: EngineConfig, workload: Workload, cfg: InprocessPoint):
        self.engine_cfg, self.workload, self.cfg = engine_cfg, workload, cfg
        self.counter = mp.get_context("spawn").Value("q", 0)
        self.errors: list = []
        self.procs: list = []
        self.threads: list[threading.Thread] = []
        self.sinks: list[list] = []
        self.engines: list[Engine] = []
        self.info: dict[str, Any] = {}
        self.stats0 = None

    def start_processes(self) -> None:
        cfg, ctx = self.cfg, mp.get_context("spawn")
        ready, self.go, self.stop = ctx.Barrier(cfg.n_models + 1), ctx.Event(), ctx.Event()
        self.out_q = ctx.Queue()
        for m in range(cfg.n_models):
            args = (self.engine_cfg, self.workload, cfg, m, ready, self.go, self.stop)
            p = ctx.Process(target=_child, daemon=True, args=(*args, self.counter, self.out_q))
            p.start()
            self.procs.append(p)
        ready.wait(timeout=cfg.deadline_s)

    def start_threads(self, engines: list[Engine]) -> None:
        cfg = self.cfg
        self.go, self.stop = threading.Event(), threading.Event()
        while len(engines) < cfg.n_models:
            e = create_engine(self.engine_cfg)
            e.load()
            engines.append(e)
        self.engines = engines[: cfg.n_models]
        for e in self.engines:
            _warm(e, self.workload, cfg)
        for m, e in enumerate(self.engines):
            t, s = _drive(e, self.workload, cfg, m, self.go, self.stop, self.counter, self.errors)
            self.threads += t
            self.sinks += s
        self.info = dict(self.engines[0].info)
        first = self.engines[0]
        self.stats0 = first.server_stats() if isinstance(first, ReportsServerStats) else None
        if gpu_peak_mb() is not None:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def wait(self, progress: Callable[[float, int], None] | None) -> tuple[float, bool]:
        """Let them run until both minima are met (or the deadline); (start, hit_deadline)."""
        cfg = self.cfg
        t_start = time.perf_counter()
        self.go.set()
        hit_deadline = False
        while True:
            time.sleep(0.05)
            elapsed = time.perf_counter() - t_start
            done = self.counter.value
            if progress:
                progress(elapsed, done)
            if self.errors or self.stop.is_set():
                break
            if elapsed >= cfg.duration and done >= cfg.min_calls:
                break
            if elapsed >= cfg.deadline_s:
                hit_deadline = True
                log.warning(
                    "stopped at the %.0f s deadline after %d calls (< --min-calls %d)",
                    cfg.deadline_s,
                    done,
                    cfg.min_calls,
                )
                break
            if self.procs and not any(p.is_alive() for p in self.procs):
                break
        self.stop.set()
        return t_start, hit_deadline

    def collect_processes(self) -> tuple[list[tuple], float | None]:
        """Each process's records (and GPU memory); raises when any of them failed."""
        records: list[tuple] = []
        gpu_mb: float | None = None
        child_errors = []
        for _ in self.procs:
            try:
                _, recs, err, info, gmb = self.out_q.get(timeout=self.cfg.deadline_s)
            except queue_mod.Empty:
                child_errors.append("a model process did not report back")
                continue
            if err:
                child_errors.append(err)
            records += recs or []
            self.info = self.info or info
            if gmb is not None:
                gpu_mb = (gpu_mb or 0.0) + gmb
        for p in self.procs:
            p.join(timeout=30)
        if child_errors:
            raise EngineError(f"model process failed: {child_errors[0]}")
        return records, gpu_mb

    def collect_threads(self) -> tuple[list[tuple], float | None]:
        for t in self.threads:
            t.join()
        if self.errors:
            raise EngineError(f"inference failed: {self.errors[0]}") from self.errors[0]
        return [r for s in self.sinks for r in s], gpu_peak_mb()

    def server_delta(self) -> dict[str, Any]:
        e = self.engines[0]
        if self.stats0 is None or not isinstance(e, ReportsServerStats):
            return {}
        return e.server_delta(self.stats0, e.server_stats())


def run_inprocess(
    engine_cfg: EngineConfig,
    workload: Workload,
    cfg: InprocessPoint,
    *,
    engines: list[Engine] | None = None,
    progress: Callable[[float, int], None] | None = None,
    meter: Meter | None = None,
) -> InprocessResult:
    """Measure one (batch size, n_models, workers_per_model) point.

    `engines` lets a sweep reuse loaded copies across batch sizes (thread mode only); `meter`
    reads energy over the timed window (after warm-up, until the last call has returned).
    """
    copies = _Copies(engine_cfg, workload, cfg)
    if cfg.processes:
        copies.start_processes()
    else:
        copies.start_threads(engines if engines is not None else [])
    sampler = Sampler()
    sampler.start()
    meter = start_meter(meter)
    energy: Reading | None = None
    t_start, hit_deadline = copies.wait(progress)
    if cfg.processes:
        try:
            records, gpu_mb = copies.collect_processes()
        finally:
            cpu = sampler.stop()
            energy = stop_meter(meter)
        server: dict[str, Any] = {}
    else:
        try:
            records, gpu_mb = copies.collect_threads()
        finally:
            cpu = sampler.stop()
            energy = stop_meter(meter)
        server = copies.server_delta()
    duration = time.perf_counter() - t_start
    if not records:
        raise EngineError("no call completed; raise --duration or check the engine")
    res = _result(
        cfg, records, duration, cpu, sampler.peak_rss, gpu_mb, hit_deadline, copies.info, server
    )
    res.energy = energy
    return res


def _result(cfg, records, duration, cpu, peak_rss, gpu_mb, hit_deadline, infos, server):
    a = {k: np.asarray(v) for k, v in zip(_FIELDS, zip(*records, strict=True), strict=True)}
    labelled = int(a["labelled"].sum())
    n_inputs = max(int(a["inputs"].sum()), 1)
    vectors = None
    if a["vec_sum"].sum() > 0:
        vectors = (
            int(a["vec_min"].min()),
            float(a["vec_sum"].sum()) / n_inputs,
            int(a["vec_max"].max()),
        )
    return InprocessResult(
        config=cfg,
        e2e=Latency.from_ns(a["t3"] - a["t0"]),
        forward=Latency.from_ns(a["t2"] - a["t1"]),
        throughput=Throughput.from_completions(a["t0"], a["t3"], a["inputs"]),
        calls=len(records),
        inputs=int(a["inputs"].sum()),
        useful_tokens=int(a["tokens"].sum()),
        padded_tokens=int(a["padded"].sum()),
        invalid=int(a["invalid"].sum()),
        accuracy=(int(a["correct"].sum()) / labelled) if labelled else None,
        duration_s=duration,
        cpu_percent=cpu,
        peak_rss_mb=peak_rss / 2**20,
        peak_gpu_mem_mb=gpu_mb,
        hit_deadline=hit_deadline,
        engine_info=infos,
        server=server,
        num_vectors=vectors,
        avg_pixels=float(a["pixels"].sum()) / n_inputs if a["pixels"].sum() else None,
        avg_visual_tokens=float(a["vtokens"].sum()) / n_inputs if a["vtokens"].sum() else None,
    )
