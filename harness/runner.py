"""The one benchmark loop: resume, points, progress, measure(point) -> row, append, report.

Every benchmark command builds its scenarios and hands them to `run` with an executor. A
scenario knows what to measure (its points, possibly chosen adaptively from the rows already
measured) and how (`measure(point)`); an executor knows where a point runs (`submit(scenario,
point) -> future`: here, or on a Ray node); the runner owns everything else, the same way for
all of them: the plan loop, resume, the progress bar, the single writer of rows, the summary
and the report.
"""

from __future__ import annotations

import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.console_tables import best_row, print_rows, progress_bar
from core.noise import HostWatch
from core.sysinfo import host_name
from harness.results import ResultsStore, config_key

log = logging.getLogger("billionbench")

#: called by a scenario while it measures, with a short status ("3.2s/5s · 40 calls")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Point:
    """One configuration to measure. `config` is its identity (hashed into config_key)."""

    config: dict[str, Any]
    label: str
    params: Any = None  # the scenario's own description of the point

    @property
    def key(self) -> str:
        return config_key(self.config)


@dataclass
class Measurement:
    """What measuring a point gives: the row's columns, and notes for its config_json."""

    row: dict[str, Any]
    notes: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)  # printed by the runner, in order


def repeated(config: dict[str, Any], label: str, params: Any, repeats: int):
    """A point `repeats` times, one row each: the first run keeps the key it always had (so old
    rows still resume), the others carry their `repeat` in the key and the label."""
    for rep in range(max(1, repeats)):
        key = {**config, "repeat": rep} if rep else config
        run = f" · run {rep + 1}/{repeats}" if repeats > 1 else ""
        yield Point(key, label + run, params)


#: a plan yields points and is sent back each point's row (stored or just measured)
Plan = Generator[Point, dict[str, Any] | None, None]


class Unmeasurable(Exception):  # noqa: N818 - a condition, not a failure of the runner
    """A plan that cannot go on anywhere (its scenario could not be built on any node): the
    runner records `point` with `measurement` (a row whose `error` says why) and goes on with
    the other scenarios of the run."""

    def __init__(self, point: Point, measurement: Measurement):
        super().__init__(measurement.row.get("error", ""))
        self.point, self.measurement = point, measurement


class Scenario(ABC):
    """A way of measuring: its points and `measure(point)`; resources it opens, it closes."""

    #: printed above the summary table
    title: str = ""
    #: whether the plan chooses its next point from the rows measured so far (a search): such a
    #: plan is sent each point's row before it yields the next; others may run points at once
    adaptive: bool = True
    #: the progress bar line this scenario counts on (a run of several targets: its hardware)
    group: str = "points"
    #: how it is named when a run holds several (its summary files go in a folder of this name)
    name: str = ""

    @abstractmethod
    def plan(self) -> Plan:
        """Yield the points to measure; each `yield` evaluates to that point's row (None for a
        plan that is not adaptive, whose points may still be running)."""

    @abstractmethod
    def measure(self, point: Point, progress: Progress) -> Measurement:
        """Measure one point and return its row's columns (config_key/json excluded)."""

    def header(self) -> list[str]:
        """Lines printed before the first point."""
        return []

    def estimate(self) -> int | None:
        """How many points the plan will yield, when known (for the progress bar)."""
        return None

    def summarize(self, console, rows: list[dict[str, Any]], out: Path) -> None:
        """Print what the rows say (a table, the best point, checks); files it writes go in
        `out` (the output folder, or a scratch folder on a cluster node)."""
        return None

    def close(self) -> None:
        """Release what `measure` opened (servers, engines)."""
        return None

    def report_limits(self) -> dict[str, float | None]:
        """Latency limits for the report written at the end (max_p95_ms / max_p99_ms)."""
        return {}


class Executor(ABC):
    """Where points run: `submit` hands back a future of the point's Measurement."""

    name: str = ""
    #: whether futures complete on other threads (rows are then written by a writer thread)
    asynchronous: bool = False

    @abstractmethod
    def submit(self, scenario: Scenario, point: Point, progress: Progress) -> Future:
        """Start measuring `point`; the future resolves to its Measurement (or its error)."""

    def finish(self, console, results: list[tuple[Scenario, list[dict[str, Any]]]]) -> None:
        """After the summaries: what the executor does with the run's rows (fetch artifacts)."""
        return None

    def close(self) -> None:
        return None


class LocalExecutor(Executor):
    """Runs each point in this process, one after another: the embedded default."""

    name = "local"

    def __init__(self, remeasure_disturbed: int = 0):
        self.remeasure_disturbed = remeasure_disturbed

    def submit(self, scenario: Scenario, point: Point, progress: Progress) -> Future:
        done: Future = Future()
        earlier: list[dict[str, Any]] = []
        try:
            while True:
                with HostWatch() as watch:
                    m = scenario.measure(point, progress)
                m.row.update(watch.columns())
                why = m.row.get("disturbed_reason")
                if why is None or len(earlier) >= self.remeasure_disturbed:
                    break
                earlier.append({"throughput": m.row.get("throughput_req_per_sec"), "why": why})
                progress(f"disturbed ({why}); measuring again")
        except BaseException as e:  # noqa: BLE001 - re-raised by the runner, cause kept
            done.set_exception(e)
            return done
        if earlier:  # what the disturbed runs measured stays in the row's config_json
            m.notes["disturbed_runs"] = earlier
        m.row.setdefault("executor", self.name)
        m.row.setdefault("node", host_name())
        done.set_result(m)
        return done


class Recorder:
    """The single writer of rows: each is appended the moment it exists (thread-safe)."""

    def __init__(self, store: ResultsStore, stored: dict[str, dict[str, Any]]):
        self.store, self.stored = store, stored
        self._lock = threading.Lock()

    def record(self, point: Point, m: Measurement) -> dict[str, Any]:
        row = finish_row(point, m)
        with self._lock:
            self.store.append(row)
            self.stored[point.key] = row
        return row


def finish_row(point: Point, m: Measurement) -> dict[str, Any]:
    """A measurement's columns plus the point's identity: the row that is stored."""
    row = dict(m.row)
    row["config_key"] = point.key
    row["config_json"] = json.dumps({**point.config, **m.notes}, sort_keys=True, default=str)
    return row


def failed(row: dict[str, Any]) -> bool:
    """Whether a row records a point that was not measured (its `error` says why)."""
    e = row.get("error")
    return isinstance(e, str) and bool(e)


#: the table of a run of several targets: the best point of each
SUMMARY = [
    ("hw_type", "hw", 0),
    ("engine", "engine", 0),
    ("precision", "precision", 0),
    ("batch_size", "batch", 0),
    ("throughput_req_per_sec", "inputs/s", 1),
    ("p99_latency_ms", "p99 ms", 2),
    ("1B_cost", "$/1B", 2),
    ("floor_1B_cost", "floor $/1B", 2),
    ("efficiency", "efficiency", 3),
    ("node", "node", 0),
]


class _Run:
    """One run of the runner: its bar, its writer and what was measured in it."""

    def __init__(self, store: ResultsStore, console, executor: Executor, groups: list[str]):
        self.console, self.executor = console, executor
        self.recorder = Recorder(store, stored_rows(store))
        self.lock = threading.Lock()
        self.seen: set[str] = set()  # keys measured or said to be resumed in this run
        self.groups = groups
        self.bar: Any = None
        self.tasks: dict[str, Any] = {}
        # rows from other threads are written by one thread, so no node waits on a write
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bb-writer")

    def say(self, scenario: Scenario, text: str) -> None:
        prefix = f"[{scenario.group}] " if len(self.groups) > 1 else ""
        for line in text.rstrip().splitlines():
            self.console.print(prefix + line, highlight=False, markup=False, soft_wrap=True)

    # ---- the progress bar
    def task(self, scenario: Scenario) -> Any:
        if scenario.group not in self.tasks:
            self.tasks[scenario.group] = self.bar.add_task(scenario.group, total=0, info="")
        return self.tasks[scenario.group]

    def grow(self, scenario: Scenario, n: int | None) -> None:
        task = self.task(scenario)
        if n:
            self.bar.update(task, total=(self.bar.tasks[task].total or 0) + n)

    def advance(self, scenario: Scenario, label: str) -> None:
        self.bar.update(self.task(scenario), advance=1, info=label if len(self.groups) > 1 else "")

    # ---- one point
    def submit(self, scenario: Scenario, point: Point) -> Future:
        """Measure `point` where the executor runs it; the future resolves to the stored row."""
        task = self.task(scenario)
        if len(self.groups) == 1:
            self.bar.update(task, description=point.label, info="measuring")

        def progress(text: str) -> None:
            self.bar.update(task, info=text)

        row: Future = Future()

        def measured(f: Future) -> None:
            try:
                m = f.result()
            except BaseException as e:  # noqa: BLE001 - the plan's thread re-raises it
                row.set_exception(e)
                return
            if self.executor.asynchronous:
                self.writer.submit(self.record, scenario, point, m, row)
            else:
                self.record(scenario, point, m, row)

        self.executor.submit(scenario, point, progress).add_done_callback(measured)
        return row

    def record(self, scenario: Scenario, point: Point, m: Measurement, out: Future) -> None:
        try:
            row = self.recorder.record(point, m)
        except BaseException as e:  # noqa: BLE001
            out.set_exception(e)
            return
        with self.lock:
            self.seen.add(point.key)
            for msg in m.messages:
                self.console.print(msg, highlight=False)
            if failed(m.row):
                self.say(scenario, f"{point.label}: failed: {m.row['error']}")
        self.advance(scenario, point.label)
        out.set_result(row)

    # ---- one scenario's plan
    def drive(self, scenario: Scenario) -> list[dict[str, Any]]:
        """Run the scenario's plan: resume what is stored, measure the rest, in plan order. A
        point the plan yields again (a plan restarted elsewhere) is not measured twice."""
        for line in scenario.header():
            self.console.print(line, highlight=False)
        self.grow(scenario, scenario.estimate())
        plan = scenario.plan()
        order: list[Any] = []
        running: dict[str, Future] = {}
        row: dict[str, Any] | None = None
        while True:
            try:
                point = plan.send(row)
            except StopIteration:
                break
            except Unmeasurable as e:
                order.append(self.recorder.record(e.point, e.measurement))
                self.say(scenario, f"{e.point.label}: failed: {e}")
                self.advance(scenario, e.point.label)
                break
            stored = self.recorder.stored.get(point.key)
            if stored is not None and point.key not in running:
                with self.lock:
                    first = point.key not in self.seen
                    self.seen.add(point.key)
                if first:
                    self.say(scenario, f"{point.label}: already measured (resume); --fresh to redo")
                    self.advance(scenario, point.label)
                order.append(row := stored)
                continue
            future = running.get(point.key) or self.submit(scenario, point)
            running[point.key] = future
            # a plan that is not adaptive goes on while its points run (a local point has
            # finished already: its error, if any, stops the run now)
            row = future.result() if scenario.adaptive or future.done() else None
            order.append(future)
        return [x.result() if isinstance(x, Future) else x for x in order]

    def drive_all(self, scenarios: list[Scenario]) -> list[list[dict[str, Any]]]:
        if len(scenarios) == 1:
            return [self.drive(scenarios[0])]
        threads = [
            _Thread(target=self.drive, args=(s,), name=s.name, daemon=True) for s in scenarios
        ]
        for t in threads:
            t.start()
        return [t.result() for t in threads]


def run(
    scenarios: Scenario | Iterable[Scenario],
    store: ResultsStore,
    console,
    executor: Executor | None = None,
) -> list[tuple[Scenario, list[dict[str, Any]]]]:
    """Measure every point of every scenario's plan into `store` (held by the caller), then
    print each one's summary and the run's report. Several scenarios (a cluster's targets)
    run at once, each on its own thread."""
    from analysis.reporting import report_for_run

    scenarios = [scenarios] if isinstance(scenarios, Scenario) else list(scenarios)
    executor = executor or LocalExecutor()
    groups = list(dict.fromkeys(s.group for s in scenarios))
    state = _Run(store, console, executor, groups)
    try:
        try:
            with progress_bar(console) as bar:
                state.bar = bar
                for g in groups:
                    state.tasks[g] = bar.add_task(g, total=0, info="starting")
                results = list(zip(scenarios, state.drive_all(scenarios), strict=True))
        finally:
            state.writer.shutdown(wait=True)
            for s in scenarios:
                s.close()
        summarize(console, results, store)
        executor.finish(console, results)
    finally:
        executor.close()
    report_for_run(console, store.dir, **scenarios[0].report_limits())
    return results


def summarize(console, results: list[tuple[Scenario, list[dict[str, Any]]]], store) -> None:
    """Each scenario's summary (its files in the output folder, or one folder per scenario when
    the run has several), the best point of each, and how many points failed."""
    several = len(results) > 1
    for s, rows in results:
        out = Path(store.dir) / s.name.replace("/", "-") if several else Path(store.dir)
        s.summarize(console, [r for r in rows if not failed(r)], out)
    console.print(f"results: {store.csv} and {store.parquet}", highlight=False)
    if several:
        best = [b for _, rows in results if (b := best_row([r for r in rows if not failed(r)]))]
        print_rows(console, "best point per target (lowest $/1B)", SUMMARY, best)
    n_failed = sum(failed(r) for _, rows in results for r in rows)
    if n_failed:
        console.print(f"{n_failed} point(s) failed; their rows say why (column error)")


def run_command(output, console, title: str, build: Callable[[], tuple[list, Executor]]) -> int:
    """A benchmark command's body: lock the output folder (before any setup, so a second run
    into it fails at once), build the scenarios and their executor, and run them."""
    store = ResultsStore(output.output_dir, fresh=output.fresh)
    with store.writing(title):
        scenarios, executor = build()
        run(scenarios, store, console, executor)
    return 0


def run_local(build, target, executor, output, console, title: str) -> int:
    """`--executor local`: one target, measured in this process (`executor` is its config)."""
    target.require_single()
    local = LocalExecutor(executor.remeasure_disturbed if executor else 0)
    return run_command(output, console, title, lambda: ([build(target, console)], local))


def stored_rows(store: ResultsStore) -> dict[str, dict[str, Any]]:
    """The last stored row of every config_key (what --resume skips); a point recorded as
    failed (its `error` says why, e.g. its node died) is measured again."""
    df = store.read()
    if "config_key" not in df or df.empty:
        return {}
    df = df.dropna(subset=["config_key"]).drop_duplicates("config_key", keep="last")
    if "error" in df:
        df = df[df["error"].isna()]
    return {str(r["config_key"]): r for r in df.to_dict("records")}


class _Thread(threading.Thread):
    """A thread whose target's result (or exception) is handed to the caller of result()."""

    def run(self) -> None:
        try:
            self._value = self._target(*self._args)  # type: ignore[attr-defined]
            self._error = None
        except BaseException as e:  # noqa: BLE001 - re-raised in result()
            self._value, self._error = None, e

    def result(self):
        self.join()
        if self._error is not None:
            raise self._error
        return self._value
