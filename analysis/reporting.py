"""`python -m harness.report`: results files in, one offline HTML report and a Markdown summary out.

The views: best configuration per task x hardware (and within a latency
limit), cost vs latency with the Pareto front, cost over VUs x batch, "did we try enough VUs?",
engine savings, hardware comparison against the roofline floor, sanity checks, provenance.
"""

from __future__ import annotations

import logging
from pathlib import Path

from analysis import render
from analysis.frames import ReportError, duplicates, load, read_references
from analysis.planner import make_plan
from analysis.views import (
    LATENCY_COLUMNS,
    best_configs,
    engine_savings,
    hardware_comparison,
    pareto_front,
    vu_groups,
)

__all__ = [
    "LATENCY_COLUMNS",
    "ReportError",
    "best_configs",
    "duplicates",
    "engine_savings",
    "hardware_comparison",
    "load",
    "pareto_front",
    "read_references",
    "report_for_run",
    "vu_groups",
    "write_report",
]

log = logging.getLogger(__name__)


def charts_or_none():
    """The charts module, or None when plotly is not installed (Markdown is still written)."""
    try:
        from analysis import charts
    except ImportError:
        return None
    return charts


def write_report(
    paths,
    out="report.html",
    *,
    latency_metric: str = "p95",
    latency_limit_ms: float | None = None,
    demand=None,
    references: bool = False,
    filters: dict | None = None,
) -> tuple[Path | None, Path]:
    """Read results files or directories; write `out` (HTML) and a .md next to it.

    `demand` (analysis.planner.Demand) adds the deployment plan view; `references` the
    published reference rows (in the plan and their own section, never in a measured view).
    Returns (html_path, md_path); html_path is None when plotly is not installed.
    """
    if latency_metric not in LATENCY_COLUMNS:
        raise ReportError(
            f"latency metric must be one of {', '.join(LATENCY_COLUMNS)}; got {latency_metric!r}"
        )
    df = load([paths] if isinstance(paths, (str, Path)) else list(paths))
    refs = read_references() if references else None
    plan = None
    if demand is not None:
        plan = make_plan(df, demand, references=refs, filters=filters)
    return render.write(
        df,
        out,
        metric=latency_metric,
        limit_ms=latency_limit_ms,
        charts=charts_or_none(),
        plan=plan,
        references=refs,
    )


def report_for_run(console, output_dir, *, max_p95_ms=None, max_p99_ms=None) -> None:
    """The end of harness.run / harness.sweep: write <output_dir>/report.html and say where.

    Never raises: the results are already stored, a report failure must not fail the run.
    """
    metric, limit = ("p99", max_p99_ms) if max_p99_ms else ("p95", max_p95_ms)
    results = Path(output_dir) / "results.csv"
    try:
        html, md = write_report(
            [results],
            Path(output_dir) / "report.html",
            latency_metric=metric,
            latency_limit_ms=limit,
        )
    except Exception as e:  # noqa: BLE001 - reported in one line, the run's rows are safe
        log.warning("report not written (%s); the results are in %s", e, results)
        return
    if html is None:
        console.print(
            f"report: {md} (charts need plotly: {render.INSTALL_HINT})",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    else:
        console.print(
            f"report: {html} (summary {md.name})", highlight=False, soft_wrap=True, markup=False
        )
