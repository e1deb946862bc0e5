"""Console tables of result rows: columns declared as compact specs, cells formatted alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.results import quality_failed

Column = tuple[str, str, int]  # (result column, heading, decimals)


def columns(spec: str) -> list[Column]:
    """A console table's columns from lines of `result_column | heading | decimals`."""
    out = []
    for line in filter(None, (ln.strip() for ln in spec.strip().splitlines())):
        key, head, nd = (part.strip() for part in line.split("|"))
        out.append((key, head, int(nd)))
    return out


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
        if (r.get("failed_requests") or 0) > 0 or quality_failed(r):
            return False
        if limit is None or limit_column is None:
            return True
        v = r.get(limit_column)
        return v is not None and not (isinstance(v, float) and math.isnan(v)) and v <= limit

    good = [r for r in rows if ok(r) and r.get("1B_cost") == r.get("1B_cost")]
    return min(good, key=lambda r: r["1B_cost"], default=None)


def progress_bar(console):
    """The progress display of a run: a description, a bar, points done / total, an info field."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} · {task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def confidence_lines(rows: list[dict]) -> list[str]:
    """What the interval columns mean, which p99s are not resolved, which points were disturbed."""
    lines = [
        "how sure: inputs/s low = the lower end of the throughput's 95 % interval (batch means "
        "over the run's 1-s windows; - : too few windows, measure longer or use --repeats 3); "
        "p99 bound ms = a distribution-free 95 % upper bound on the p99 (- : not resolved)"
    ]
    unresolved = [r for r in rows if r.get("p99_resolved") is False]
    if unresolved:
        need = unresolved[0].get("p99_samples_needed") or 299
        lines.append(
            f"p99 not resolved on {len(unresolved)} of {len(rows)} rows: a 95 % bound needs at "
            f"least {need} samples (--min-calls / --iterations)"
        )
    for r in rows:
        if r.get("disturbed"):
            where = f"batch {r['batch_size']}: " if r.get("batch_size") is not None else ""
            lines.append(
                f"[yellow]disturbed[/]: {where}a point measured on a busy host: "
                f"{r.get('disturbed_reason')}; --remeasure-disturbed 2 measures such points again"
            )
    return lines


def isa_hints(rows: list[dict]) -> list[str]:
    """A CPU with matrix units for bf16 or int8 that the rows do not use: say so, with the
    command and the quality check that goes with it."""
    isa = set(str(rows[0].get("cpu_isa") or "").split(",")) if rows else set()
    precisions = {r.get("precision") for r in rows}
    out = []
    if "amx_bf16" in isa and "bf16" not in precisions:
        out.append(
            "next: this CPU has AMX-BF16: --engine openvino --precision bf16 (or --engine eager "
            "--precision bf16) runs on its matrix units; the export's parity against eager fp32 "
            "is checked and recorded (parity_metric), and harness.sweep --reference-model checks "
            "a server's answers"
        )
    if ("amx_int8" in isa or "avx512_vnni" in isa) and "int8" not in precisions:
        out.append(
            "next: this CPU has int8 matrix instructions (AMX-INT8 / VNNI): --engine openvino "
            "--precision int8 or --engine onnx --precision int8, each parity-gated"
        )
    return out
