"""`python -m harness.report RESULTS… --out report.html`."""

from __future__ import annotations

import argparse
import sys

from analysis.references import MARKER
from analysis.render import INSTALL_HINT
from analysis.reporting import write_report
from core.config import positive_float as _positive_float
from core.errors import BillionbenchError
from harness.cli import Parser, flag_type, print_error, setup_logging
from harness.plan import add_load_args, demand_from


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="harness.report",
        description="Turn results files (from any number of runs and machines) into one offline "
        "HTML report (cost vs throughput with its Pareto front, cost over VUs x batch, the best "
        "point per task x hardware), and a Markdown summary next to it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "results",
        nargs="+",
        metavar="RESULTS",
        help="results .csv / .parquet files, or directories searched recursively for them",
    )
    p.add_argument(
        "--out", default="report.html", help="HTML file to write; report.md goes next to it"
    )
    p.add_argument(
        "--latency-metric",
        choices=("p95", "p99", "avg"),
        default=None,
        help="latency on the cost chart and for --latency-limit-ms (default p95)",
    )
    lim = p.add_mutually_exclusive_group()
    lim.add_argument(
        "--latency-limit-ms",
        type=flag_type(_positive_float),
        default=None,
        help="also show the best configuration with latency (--latency-metric) <= this",
    )
    lim.add_argument(
        "--max-p95-ms",
        type=flag_type(_positive_float),
        default=None,
        help="= --latency-metric p95 --latency-limit-ms X",
    )
    lim.add_argument(
        "--max-p99-ms",
        type=flag_type(_positive_float),
        default=None,
        help="= --latency-metric p99 --latency-limit-ms X",
    )
    add_load_args(p, required=False)
    p.add_argument(
        "--references",
        action="store_true",
        help=f"add the published figures ({MARKER}): their own section and, with --rate, the "
        "plan; never a measured view",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = build_parser().parse_args(argv)
    console = Console(width=None if Console().is_terminal else 160)
    err = Console(stderr=True, width=160)
    setup_logging(err, args.verbose)
    metric, limit = args.latency_metric or "p95", args.latency_limit_ms
    for flag, m in (("max_p95_ms", "p95"), ("max_p99_ms", "p99")):
        if getattr(args, flag) is not None:
            if args.latency_metric not in (None, m):
                print_error(
                    err,
                    f"--{flag.replace('_', '-')} sets the metric to {m}; "
                    f"drop --latency-metric {args.latency_metric}",
                )
                return 2
            metric, limit = m, getattr(args, flag)
    demand = None
    try:
        if args.rate is not None:
            if metric not in ("p95", "p99") or limit is None:
                print_error(
                    err,
                    "--rate plans within a latency limit: add --max-p99-ms X or --max-p95-ms X",
                )
                return 2
            demand = demand_from(args, metric, limit)
        html, md = write_report(
            args.results,
            args.out,
            latency_metric=metric,
            latency_limit_ms=limit,
            demand=demand,
            references=args.references,
        )
    except BillionbenchError as e:
        print_error(err, e)
        return 2
    except OSError as e:
        print_error(err, f"cannot write {args.out}: {e.strerror or e}")
        return 2
    if html is None:
        print_error(
            err,
            f"plotly is not installed, so {args.out} was not written ({md} was); "
            f"install it with: {INSTALL_HINT}",
        )
        return 2
    console.print(f"report: {html} · summary: {md}", highlight=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
