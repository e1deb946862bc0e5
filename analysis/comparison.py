"""B against A: the ratio B/A of each metric per matched point, with its 95 % interval.

Pure functions over the DataFrames `analysis.frames.load` returns; `harness.compare` is the
command. A point is one value of the key columns (`DEFAULT_KEYS`, or the user's); each side's
rows at a point are its repeats. Per side and point, a metric's interval is:

- two or more rows: the Student-t interval over their values ("t(repeats)");
- one row: for throughput, the row's own batch-means interval (`throughput_ci_low`,
  `throughput_ci_high`, `throughput_windows`) when it has one, else none ("single"); for the
  p99 and the cost, none.

The ratio's interval is `core.stats.ratio_interval`. Verdicts: wholly on the good side of 1 is
"faster" (throughput, p99 latency) or "better" (cost), wholly on the bad side "slower" /
"worse", an interval holding 1 "no difference at 95 %", no interval on either side "no
interval". A point where either side has a row under the quality gate
(`harness.results.quality_failed`) is "failing quality" whatever its numbers: never crowned.

The regression gate (`Comparison.regressions`, exit code 1 in the command): at some matched
point B's throughput ratio is below 1 - threshold even at its upper bound, or its p99 ratio above
1 + threshold even at its lower bound, or B fails the quality gate where A passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core.errors import BillionbenchError
from core.stats import Interval, finite, ratio_interval, t_interval
from harness.results import quality_failed

#: what makes two rows the same point, by default (a key empty on both sides is dropped)
DEFAULT_KEYS = (
    "task",
    "model_name",
    "hw_type",
    "mode",
    "inputs_per_request",
    "batch_size",
    "max_batch_size",
    "vus",
    "n_models",
    "workers_per_model",
)
#: columns that should not vary among one side's rows at a point: when they do, the rows are
#: pooled as repeats and the point says so (add the column to --keys to keep them apart)
POOLED = ("engine", "image", "precision", "weights")
DEFAULT_THRESHOLD = 0.05

FASTER, SLOWER, BETTER, WORSE = "faster", "slower", "better", "worse"
NO_DIFFERENCE = "no difference at 95 %"
NO_INTERVAL = "no interval"
NO_VALUE = "no value"
FAILING = "failing quality"


@dataclass(frozen=True)
class Metric:
    column: str
    label: str
    higher_is_better: bool
    good: str  # the verdict when B is surely better
    bad: str  # ... and surely worse


METRICS = (
    Metric("throughput_req_per_sec", "throughput (inputs/s)", True, FASTER, SLOWER),
    Metric("p99_latency_ms", "p99 latency (ms)", False, FASTER, SLOWER),
    Metric("1B_cost", "$ per 1B inputs", False, BETTER, WORSE),
)
THROUGHPUT, P99, COST = METRICS


class CompareError(BillionbenchError):
    """Nothing to compare: the message says which keys differ and what each side has."""


@dataclass(frozen=True)
class MetricComparison:
    metric: Metric
    a: Interval
    b: Interval
    ratio: Interval
    verdict: str
    hint: str = ""  # why there is no verdict, and what would give one

    def to_json(self) -> dict[str, Any]:
        return {
            "a": _interval_json(self.a),
            "b": _interval_json(self.b),
            "ratio": {
                "value": _num(self.ratio.mean),
                "low": _num(self.ratio.low),
                "high": _num(self.ratio.high),
            },
            "verdict": self.verdict,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class Point:
    key: dict[str, Any]
    rows_a: int
    rows_b: int
    failing: tuple[str, ...]  # the sides ("A", "B") with a row under the quality gate
    metrics: tuple[MetricComparison, ...]
    notes: tuple[str, ...] = ()

    def metric(self, column: str) -> MetricComparison:
        return next(m for m in self.metrics if m.metric.column == column)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "rows": {"a": self.rows_a, "b": self.rows_b},
            "quality_failed": list(self.failing),
            "metrics": {m.metric.column: m.to_json() for m in self.metrics},
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Comparison:
    keys: tuple[str, ...]
    threshold: float
    points: tuple[Point, ...]
    only_a: tuple[dict[str, Any], ...] = ()
    only_b: tuple[dict[str, Any], ...] = ()
    regressions: tuple[str, ...] = ()
    files_a: tuple[str, ...] = field(default=())
    files_b: tuple[str, ...] = field(default=())

    @property
    def exit_code(self) -> int:
        """1 when B regressed beyond the threshold at some point, else 0."""
        return 1 if self.regressions else 0

    def counts(self, column: str) -> dict[str, int]:
        """How many points got each verdict on one metric, in first-seen order."""
        out: dict[str, int] = {}
        for p in self.points:
            v = p.metric(column).verdict
            out[v] = out.get(v, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "a": {"files": list(self.files_a)},
            "b": {"files": list(self.files_b)},
            "keys": list(self.keys),
            "threshold": self.threshold,
            "points": [p.to_json() for p in self.points],
            "only_a": list(self.only_a),
            "only_b": list(self.only_b),
            "regressions": list(self.regressions),
            "exit_code": self.exit_code,
        }


def _num(v: float) -> float | None:
    return finite(v)


def _interval_json(i: Interval) -> dict[str, Any]:
    return {
        "mean": _num(i.mean),
        "low": _num(i.low),
        "high": _num(i.high),
        "n": i.n,
        "method": i.method,
    }


def _value(v: Any) -> Any:
    """A key cell as a plain, hashable value: None for missing, whole floats as ints."""
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item"):  # numpy scalars
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _empty(df: pd.DataFrame, column: str) -> bool:
    return column not in df.columns or df[column].isna().all()


def resolve_keys(a: pd.DataFrame, b: pd.DataFrame, keys=None) -> tuple[str, ...]:
    """The key columns to match on: `keys` (or the defaults) less those empty on both sides;
    a key neither side has as a column is refused."""
    wanted = tuple(keys) if keys else DEFAULT_KEYS
    unknown = [k for k in wanted if k not in a.columns and k not in b.columns]
    if unknown:
        raise CompareError(
            f"--keys: no column {', '.join(map(repr, unknown))} in either results set; "
            f"the defaults are {','.join(DEFAULT_KEYS)}"
        )
    kept = tuple(k for k in dict.fromkeys(wanted) if not (_empty(a, k) and _empty(b, k)))
    if not kept:
        raise CompareError(f"--keys {','.join(wanted)}: every key column is empty on both sides")
    return kept


def _groups(df: pd.DataFrame, keys: tuple[str, ...]) -> dict[tuple, pd.DataFrame]:
    """Rows per point, points in first-seen order."""
    cells = df.reindex(columns=list(keys))
    tuples = [tuple(_value(v) for v in row) for row in cells.itertuples(index=False, name=None)]
    order: dict[tuple, list[int]] = {}
    for i, t in enumerate(tuples):
        order.setdefault(t, []).append(i)
    return {t: df.iloc[idx] for t, idx in order.items()}


def _finite(values) -> list[float]:
    return [f for f in map(finite, values) if f is not None]


def side_interval(rows: pd.DataFrame, metric: Metric) -> Interval:
    """One side's value of `metric` at a point, with its 95 % interval where there is one."""
    values = _finite(rows[metric.column]) if metric.column in rows else []
    if len(values) >= 2:
        return t_interval(values)
    if not values:
        return Interval(math.nan, math.nan, math.nan, 0, "single")
    mean = values[0]
    if metric is THROUGHPUT and len(rows) == 1:
        r = rows.iloc[0]
        low, high = _finite([r.get("throughput_ci_low")]), _finite([r.get("throughput_ci_high")])
        windows = _finite([r.get("throughput_windows")])
        if low and high and windows and windows[0] >= 2 and low[0] <= mean <= high[0]:
            return Interval(mean, low[0], high[0], int(windows[0]), "batch-means")
    return Interval(mean, math.nan, math.nan, 1, "single")


def _has_interval(i: Interval) -> bool:
    return math.isfinite(i.low) and math.isfinite(i.high) and i.n >= 2


def judge(metric: Metric, a: Interval, b: Interval, failing: tuple[str, ...] = ()):
    """(ratio B/A, verdict, hint) for one metric at one point."""
    ratio = ratio_interval(a, b)
    if failing:
        return ratio, FAILING, f"{' and '.join(failing)} under the quality gate: never crowned"
    if not math.isfinite(ratio.mean):
        missing = [s for s, i in (("A", a), ("B", b)) if not (i.mean > 0)]
        return ratio, NO_VALUE, f"no {metric.column} > 0 on {' and '.join(missing) or 'a side'}"
    if not (math.isfinite(ratio.low) and math.isfinite(ratio.high)):
        lacking = [s for s, i in (("A", a), ("B", b)) if not _has_interval(i)]
        return ratio, NO_INTERVAL, f"1 row on {' and '.join(lacking)}: --repeats 2 gives one"
    good_low, good_high = (ratio.low > 1, ratio.high < 1)
    if not metric.higher_is_better:
        good_low, good_high = good_high, good_low
    if good_low:
        return ratio, metric.good, ""
    if good_high:
        return ratio, metric.bad, ""
    return ratio, NO_DIFFERENCE, ""


def _pooled_note(side: str, rows: pd.DataFrame, keys: tuple[str, ...]) -> list[str]:
    notes = []
    for c in POOLED:
        if c in keys or c not in rows:
            continue
        values = sorted({str(v) for v in rows[c] if _value(v) is not None})
        if len(values) > 1:
            notes.append(
                f"{side} pools {len(values)} {c} values ({', '.join(values)}) as repeats; "
                f"add {c} to --keys to keep them apart"
            )
    return notes


def _describe(key: tuple, keys: tuple[str, ...]) -> dict[str, Any]:
    return dict(zip(keys, key, strict=True))


def _label(key: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in key.items())


def _show(values) -> str:
    shown = sorted({"(empty)" if v is None else str(v) for v in values})
    return ", ".join(shown[:6]) + (f" … {len(shown) - 6} more" if len(shown) > 6 else "")


def no_match_message(ga: dict, gb: dict, keys: tuple[str, ...]) -> str:
    """One line: which keys differ between the sides and what values each has."""
    parts = []
    for i, k in enumerate(keys):
        va, vb = {t[i] for t in ga}, {t[i] for t in gb}
        if va != vb:
            parts.append(f"{k}: A has {_show(va)}, B has {_show(vb)}")
    why = (
        "; ".join(parts)
        if parts
        else "each key's values occur on both sides, but never in the same combination"
    )
    return (
        f"no point of A matches one of B on {','.join(keys)}: {why} "
        "(choose the columns to match with --keys)"
    )


def compare(
    a: pd.DataFrame,
    b: pd.DataFrame,
    *,
    keys=None,
    threshold: float = DEFAULT_THRESHOLD,
) -> Comparison:
    """B against A at every point both have (see the module docstring)."""
    for side, df in (("A", a), ("B", b)):
        if df is None or df.empty:
            raise CompareError(f"results set {side} has no rows")
    used = resolve_keys(a, b, keys)
    ga, gb = _groups(a, used), _groups(b, used)
    matched = [k for k in ga if k in gb]
    if not matched:
        raise CompareError(no_match_message(ga, gb, used))
    points, regressions = [], []
    for k in matched:
        rows_a, rows_b = ga[k], gb[k]
        failing = tuple(
            side
            for side, rows in (("A", rows_a), ("B", rows_b))
            if any(quality_failed(r) for r in rows.to_dict("records"))
        )
        metrics = []
        for m in METRICS:
            ia, ib = side_interval(rows_a, m), side_interval(rows_b, m)
            ratio, verdict, hint = judge(m, ia, ib, failing)
            metrics.append(MetricComparison(m, ia, ib, ratio, verdict, hint))
        key = _describe(k, used)
        notes = _pooled_note("A", rows_a, used) + _pooled_note("B", rows_b, used)
        point = Point(key, len(rows_a), len(rows_b), failing, tuple(metrics), tuple(notes))
        points.append(point)
        regressions += _regressions(point, threshold)
    files = [
        tuple(dict.fromkeys(map(str, df["source_file"]))) if "source_file" in df else ()
        for df in (a, b)
    ]
    return Comparison(
        keys=used,
        threshold=threshold,
        points=tuple(points),
        only_a=tuple(_describe(k, used) for k in ga if k not in gb),
        only_b=tuple(_describe(k, used) for k in gb if k not in ga),
        regressions=tuple(regressions),
        files_a=files[0],
        files_b=files[1],
    )


def _regressions(p: Point, threshold: float) -> list[str]:
    """Why B is worse than A beyond `threshold` at this point (empty: it is not)."""
    out = []
    thr, p99 = p.metric(THROUGHPUT.column).ratio, p.metric(P99.column).ratio
    where = _label(p.key)
    if math.isfinite(thr.high) and thr.high < 1 - threshold:
        out.append(
            f"{where}: throughput B/A {thr.mean:.3f} [{thr.low:.3f}, {thr.high:.3f}] "
            f"below {1 - threshold:g} even at its upper bound"
        )
    if math.isfinite(p99.low) and p99.low > 1 + threshold:
        out.append(
            f"{where}: p99 B/A {p99.mean:.3f} [{p99.low:.3f}, {p99.high:.3f}] "
            f"above {1 + threshold:g} even at its lower bound"
        )
    if "B" in p.failing and "A" not in p.failing:
        out.append(f"{where}: B fails the quality gate, A passes")
    return out


# rendering: the rows of the table the console and Markdown show


def fmt_value(v: float) -> str:
    if not math.isfinite(v):
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 0.01 or v == 0:
        return f"{v:.3g}" if a < 1 else f"{v:.2f}"
    return f"{v:.2e}"


def fmt_interval(i: Interval) -> str:
    """'10.2 [9.80, 10.6] · 3 repeats' (t over repeats), '… · 30 windows' (batch means of one
    run), or '10.2 · 1 row' without bounds."""
    if not math.isfinite(i.mean):
        return "-"
    if not _has_interval(i):
        return f"{fmt_value(i.mean)} · 1 row"
    what = "windows" if i.method == "batch-means" else "repeats"
    return f"{fmt_value(i.mean)} [{fmt_value(i.low)}, {fmt_value(i.high)}] · {i.n} {what}"


def fmt_ratio(r: Interval) -> str:
    if not math.isfinite(r.mean):
        return "-"
    if not (math.isfinite(r.low) and math.isfinite(r.high)):
        return f"{r.mean:.3f}×"
    return f"{r.mean:.3f}× [{r.low:.3f}, {r.high:.3f}]"


HEADERS = ("metric", "A", "B", "B/A [95 % CI]", "verdict")


def varying_keys(c: Comparison) -> tuple[str, ...]:
    """The keys whose value differs between matched points (the others go in the title)."""
    return tuple(k for k in c.keys if len({repr(p.key[k]) for p in c.points}) > 1)


def common_key(c: Comparison) -> dict[str, Any]:
    vary = varying_keys(c)
    return {k: v for k, v in c.points[0].key.items() if k not in vary}


def table(c: Comparison) -> tuple[tuple[str, ...], list[tuple[str, ...]], list[int]]:
    """(headers, rows, index of each point's first row): one row per point and metric, the
    point's varying keys on its first row only."""
    vary = varying_keys(c)
    headers = (*vary, *HEADERS)
    rows, starts = [], []
    for p in c.points:
        starts.append(len(rows))
        for i, m in enumerate(p.metrics):
            keycells = tuple(
                ("-" if p.key[k] is None else str(p.key[k])) if i == 0 else "" for k in vary
            )
            verdict = m.verdict + (f" ({m.hint})" if m.hint else "")
            rows.append(
                (
                    *keycells,
                    m.metric.label,
                    fmt_interval(m.a),
                    fmt_interval(m.b),
                    fmt_ratio(m.ratio),
                    verdict,
                )
            )
    return headers, rows, starts


def summary_lines(c: Comparison) -> list[str]:
    """What the table does not show: the common key, unmatched points, notes, the gate."""
    lines = []
    common = common_key(c)
    if common:
        lines.append("at " + _label(common))
    for side, only in (("A", c.only_a), ("B", c.only_b)):
        if only:
            shown = "; ".join(_label(k) for k in only[:3])
            more = f" … {len(only) - 3} more" if len(only) > 3 else ""
            lines.append(
                f"only in {side} ({len(only)} point{'s' * (len(only) != 1)}): {shown}{more}"
            )
    for p in c.points:
        lines += [f"note: {_label(p.key)}: {n}" for n in p.notes]
        if p.failing:
            lines.append(f"failing quality: {_label(p.key)} on {' and '.join(p.failing)}")
    for m in METRICS:
        counts = ", ".join(f"{n} {v}" for v, n in c.counts(m.column).items())
        lines.append(f"{m.label}: {counts}")
    gate = f"regression gate (threshold {c.threshold:.0%})"
    if c.regressions:
        lines.append(f"{gate}: FAILED")
        lines += [f"regression: {r}" for r in c.regressions]
    else:
        lines.append(f"{gate}: passed")
    return lines


def markdown(c: Comparison) -> str:
    """The comparison as a Markdown section (a pipe table and its summary lines)."""
    headers, rows, _ = table(c)

    def line(cells) -> str:
        return "| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |"

    out = [
        "## B vs A",
        "",
        f"A: {', '.join(c.files_a) or '(in memory)'}  ",
        f"B: {', '.join(c.files_b) or '(in memory)'}  ",
        f"matched on {', '.join(c.keys)}: {len(c.points)} point{'s' * (len(c.points) != 1)}",
        "",
        line(headers),
        line(["---"] * len(headers)),
        *(line(r) for r in rows),
        "",
        *(f"- {s}" for s in summary_lines(c)),
    ]
    return "\n".join(out) + "\n"
