"""`python -m harness.compare A B`: B against A, the ratio of each metric with its 95 % interval.

A and B are results sets: a folder (searched recursively), a results file, or several of them
as a comma list. Points are matched on key columns (`--keys`); per matched point it prints the
ratio B/A of the throughput, the p99 latency and the $/1B with its 95 % interval and a verdict.
Exit code 1 when B is worse than A beyond `--threshold` at some point (a CI regression gate),
2 for errors. The logic is `analysis.comparison`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from analysis.comparison import (
    DEFAULT_KEYS,
    DEFAULT_THRESHOLD,
    FAILING,
    METRICS,
    Comparison,
    compare,
    markdown,
    summary_lines,
    table,
)
from core.config import share
from harness.cli import Parser, flag_type, run_command


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="harness.compare",
        description="Compare two results sets point by point: the ratio B/A of the throughput, "
        "the p99 latency and the $/1B with its 95 % confidence interval, and a verdict. "
        "Exit code 1 when B regressed beyond --threshold, 2 for errors.",
    )
    p.add_argument(
        "a",
        metavar="A",
        help="the baseline: a results folder, a .csv / .parquet file, or a comma list of them",
    )
    p.add_argument("b", metavar="B", help="the candidate, given as A is")
    p.add_argument(
        "--keys",
        default=",".join(DEFAULT_KEYS),
        help="comma list of the columns that make two rows the same point (a column empty on "
        "both sides is dropped)",
    )
    p.add_argument(
        "--threshold",
        type=flag_type(share),
        default=DEFAULT_THRESHOLD,
        help="exit 1 when some point's throughput B/A is below 1 - this at its upper bound, or "
        "its p99 B/A above 1 + this at its lower bound",
    )
    p.add_argument(
        "--format", choices=("table", "json", "markdown"), default="table", help="output format"
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        default=None,
        help="write the output to FILE (stdout then gets one summary line)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def paths_of(text: str) -> list[str]:
    """A results set's paths: the text itself when it exists, else its comma-separated parts."""
    if Path(text).exists():
        return [text]
    return [part.strip() for part in text.split(",") if part.strip()] or [text]


def _style(verdict: str) -> str | None:
    good = {m.good for m in METRICS}
    bad = {m.bad for m in METRICS}
    if verdict in good:
        return "green"
    if verdict in bad:
        return "red"
    return "yellow" if verdict == FAILING else None


def print_table(console, c: Comparison) -> None:
    from rich.markup import escape
    from rich.table import Table

    headers, rows, starts = table(c)
    t = Table(
        title=f"B vs A: {len(c.points)} matched point{'s' * (len(c.points) != 1)}",
        title_justify="left",
    )
    for h in headers:  # the numbers keep their line; the verdict's hint wraps
        t.add_column(escape(h), overflow="fold", no_wrap=h != headers[-1])
    ends = {s - 1 for s in starts[1:]}
    per_point = len(METRICS)
    for i, cells in enumerate(rows):
        point = c.points[i // per_point]
        verdict = point.metrics[i % per_point].verdict
        styled = [escape(x) for x in cells]
        style = _style(verdict)
        if style:
            styled[-1] = f"[{style}]{styled[-1]}[/]"
        t.add_row(*styled, end_section=i in ends)
    console.print(f"A: {escape(', '.join(c.files_a))}", soft_wrap=True, highlight=False)
    console.print(f"B: {escape(', '.join(c.files_b))}", soft_wrap=True, highlight=False)
    console.print(t)
    for line in summary_lines(c):
        bad = line.startswith(("regression", "failing quality")) or line.endswith("FAILED")
        console.print(
            f"[red]{escape(line)}[/]" if bad else escape(line), soft_wrap=True, highlight=False
        )


def render(c: Comparison, fmt: str, console) -> None:
    """The comparison in `fmt` on `console` (json and markdown as plain text)."""
    if fmt == "json":
        console.out(json.dumps(c.to_json(), indent=2, default=str), highlight=False)
    elif fmt == "markdown":
        console.out(markdown(c), end="", highlight=False)
    else:
        print_table(console, c)


def run(args: argparse.Namespace, console) -> int:
    from rich.console import Console

    from analysis.frames import load

    keys = [k.strip() for k in args.keys.split(",") if k.strip()]
    c = compare(load(paths_of(args.a)), load(paths_of(args.b)), keys=keys, threshold=args.threshold)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            render(c, args.format, Console(file=f, width=160, color_system=None, soft_wrap=False))
        gate = "FAILED" if c.regressions else "passed"
        console.print(
            f"compare: {args.out} ({len(c.points)} matched points; regression gate {gate})",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    else:
        render(c, args.format, console)
    return c.exit_code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda console: run(args, console), verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
