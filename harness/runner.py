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
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

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


#: a plan yields points and is sent back each point's row (stored or just measured)
Plan = Generator[Point, dict[str, Any], None]


class Scenario(ABC):
    """A way of measuring: its points and `measure(point)`; resources it opens, it closes."""

    #: printed above the summary table
    title: str = ""
    #: whether the plan chooses its next point from the rows it is sent; an executor may
    #: measure the points of a plan that does not (False) at the same time, on several nodes
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
        return {}


class LocalExecutor:
    """Runs each point in this process: the embedded default."""

    name = "local"

    def __init__(self, scenario: Scenario):
        self.scenario = scenario

    def measure(self, point: Point, progress: Progress) -> Measurement:
        from harness.sysinfo import host_name

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
) -> list[dict[str, Any]]:
    """Measure every point of the scenario's plan, appending each row as soon as it exists."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from harness.report import report_for_run

    store = ResultsStore(output_dir, fresh=not resume)
    recorder = Recorder(store, stored_rows(store))
    stored = recorder.stored
    executor = executor or LocalExecutor(scenario)
    for line in scenario.header():
        console.print(line, highlight=False)
    rows: list[dict[str, Any]] = []
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} · {task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
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
        report_for_run(console, output_dir, **scenario.report_limits())
    return rows


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


# --------------------------------------------------------------------------- console tables
Column = tuple[str, str, int]  # (result column, heading, decimals)


def fmt(v: Any, nd: int = 2) -> str:
    """A table cell: '-' for missing, thousands separators, small numbers in e-notation."""
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{nd}f}" if abs(v) >= 0.01 or v == 0 else f"{v:.2e}"
    return str(v)


def print_rows(console, title: str, columns: Sequence[Column], rows: list[dict]) -> None:
    """One rich table of result rows, every heading with its unit."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for _, head, _ in columns:
        t.add_column(head, justify="right")
    for r in rows:
        t.add_row(*(fmt(r.get(k), nd) for k, _, nd in columns))
    console.print(t)


def best_row(rows: list[dict], *, limit_column: str | None = None, limit: float | None = None):
    """The cheapest row ($/1B) without failures, optionally within a latency limit; or None."""
    import math

    def ok(r: dict) -> bool:
        if (r.get("failed_requests") or 0) > 0:
            return False
        if limit is None or limit_column is None:
            return True
        v = r.get(limit_column)
        return v is not None and not (isinstance(v, float) and math.isnan(v)) and v <= limit

    good = [r for r in rows if ok(r) and r.get("1B_cost") == r.get("1B_cost")]
    return min(good, key=lambda r: r["1B_cost"], default=None)
