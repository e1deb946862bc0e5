"""The one benchmark loop: resume, points, progress, measure(point) -> row, append, report.

Every benchmark command builds a Scenario and hands it to `run`. A scenario knows what to
measure (its points, possibly chosen adaptively from the rows already measured) and how
(`measure(point)`); the runner owns everything around it, the same way for all of them.
"""

from __future__ import annotations

import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from harness.results import ResultsStore, config_key
from harness.sysinfo import host_name
from harness.tables import progress_bar

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


#: a plan yields points and is sent back each point's row (stored or just measured)
Plan = Generator[Point, dict[str, Any], None]


class Scenario(ABC):
    """A way of measuring: its points and `measure(point)`; resources it opens, it closes."""

    #: printed above the summary table
    title: str = ""
    #: whether the plan chooses its next point from the rows measured so far (a search):
    #: such a plan's points run one after another, others may run on several nodes at once
    adaptive: bool = True

    @abstractmethod
    def plan(self) -> Plan:
        """Yield the points to measure; each `yield` evaluates to that point's row."""

    @abstractmethod
    def measure(self, point: Point, progress: Progress) -> Measurement:
        """Measure one point and return its row's columns (config_key/json excluded)."""

    def header(self) -> list[str]:
        """Lines printed before the first point."""
        return []

    def estimate(self) -> int | None:
        """How many points the plan will yield, when known (for the progress bar)."""
        return None

    def summarize(self, console, rows: list[dict[str, Any]], store: ResultsStore) -> None:
        """Print what the rows say (a table, the best point, checks)."""
        return None

    def close(self) -> None:
        """Release what `measure` opened (servers, engines)."""
        return None

    def report_limits(self) -> dict[str, float | None]:
        """Latency limits for the report written at the end (max_p95_ms / max_p99_ms)."""
        args = getattr(self, "args", None)
        return {k: getattr(args, k, None) for k in ("max_p95_ms", "max_p99_ms")}


class LocalExecutor:
    """Runs each point in this process: the embedded default."""

    name = "local"

    def __init__(self, scenario: Scenario):
        self.scenario = scenario

    def measure(self, point: Point, progress: Progress) -> Measurement:
        m = self.scenario.measure(point, progress)
        m.row.setdefault("executor", self.name)
        m.row.setdefault("node", host_name())
        return m


class Recorder:
    """The single writer of rows: each is appended the moment it exists (thread-safe, so an
    executor may hand rows back from several points at once)."""

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


def run(
    scenario: Scenario,
    *,
    output_dir: str,
    resume: bool,
    console,
    executor: Any = None,
    report: bool = True,
    store: ResultsStore | None = None,
) -> list[dict[str, Any]]:
    """Measure every point of the scenario's plan, appending each row as soon as it exists.

    `store`: an output folder the caller already holds (`ResultsStore.writing`); else the
    runner opens and locks `output_dir` itself.
    """
    if store is None:
        store = ResultsStore(output_dir, fresh=not resume)
        with store.writing(scenario.title):
            return run(
                scenario,
                output_dir=output_dir,
                resume=resume,
                console=console,
                executor=executor,
                report=report,
                store=store,
            )
    return _run(scenario, store, console, executor or LocalExecutor(scenario), report)


def _run(scenario: Scenario, store: ResultsStore, console, executor, report: bool) -> list[dict]:
    from harness.report import report_for_run

    recorder = Recorder(store, stored_rows(store))
    stored = recorder.stored
    for line in scenario.header():
        console.print(line, highlight=False)
    rows: list[dict[str, Any]] = []
    try:
        with progress_bar(console) as bar:
            task = bar.add_task("points", total=scenario.estimate(), info="")
            plan = scenario.plan()
            row: dict[str, Any] | None = None
            while True:
                try:
                    point = plan.send(row) if row is not None else next(plan)
                except StopIteration:
                    break
                row = stored.get(point.key)
                if row is not None:
                    console.print(
                        f"{point.label}: already measured (resume); --fresh to redo",
                        highlight=False,
                    )
                else:
                    bar.update(task, description=point.label, info="measuring")

                    def progress(text: str, _task=task) -> None:
                        bar.update(_task, info=text)

                    m = executor.measure(point, progress)
                    row = recorder.record(point, m)
                    for msg in m.messages:
                        console.print(msg, highlight=False)
                rows.append(row)
                bar.advance(task)
    finally:
        scenario.close()
    scenario.summarize(console, rows, store)
    if report:
        report_for_run(console, store.dir, **scenario.report_limits())
    return rows


def run_command_scenario(args, console, command: str, build: Callable) -> int:
    """A benchmark command's body: lock the output folder (before any setup, so a second run
    into it fails at once), build the scenario (`build(args, console)`), and run it."""
    store = ResultsStore(args.output_dir, fresh=not args.resume)
    with store.writing(f"python -m {command}"):
        scenario = build(args, console)
        run(scenario, output_dir=args.output_dir, resume=args.resume, console=console, store=store)
    return 0


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
