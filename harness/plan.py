"""`python -m harness.plan RESULTS… --rate 1e9/day --peak 3 --p99-ms 300`: rows in, a plan out.

Results folders or files from any number of machines (a T4 box, an inf2 box, a laptop, a Ray
cluster's driver) in; per workload, the hardware × engine × precision that serves the load at
the lowest $/month within the latency limit, with whole instances, headroom and the artifact.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from analysis.planner import FILTERS, HOURS_PER_MONTH, Demand, PlanError, make_plan, parse_rate
from analysis.references import BUY_MARKER, MARKER
from core.config import positive_float, share
from harness.cli import Parser, flag_type, run_command
from harness.hardware import PRICE_BASES


def _rate(text: str) -> str:
    try:
        parse_rate(text)
    except PlanError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"--rate {text!r}: ")) from None
    return text


def _peak(text: str) -> float:
    v = positive_float(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"peak ÷ mean is at least 1, got {text!r}")
    return v


def _price(text: str) -> tuple[str, float]:
    hw, sep, value = text.partition("=")
    try:
        price = float(value)
    except ValueError:
        price = -1.0
    if not sep or not hw or not price > 0:
        raise argparse.ArgumentTypeError(
            f"expected HW=$/hr with a price > 0, e.g. l4=0.52; got {text!r}"
        )
    return hw.strip(), price


#: `--price-basis all` (harness.plan only): every basis side by side
ALL_BASES = "all"


def add_load_args(p: argparse.ArgumentParser, *, required: bool, all_bases: bool = False):
    """The load and price flags harness.plan and harness.report share; returns the group.
    `all_bases`: `--price-basis` also takes `all` (the bases side by side)."""
    g = p.add_argument_group("the load and its prices (the deployment plan)")
    g.add_argument(
        "--rate",
        type=_rate,
        required=required,
        help="mean inputs: a number (per second) or N/s, N/min, N/h, N/day, N/week, N/month "
        f"(a month = {HOURS_PER_MONTH:g} h), e.g. 1e9/day",
    )
    g.add_argument("--peak", type=_peak, default=1.0, help="peak rate ÷ mean rate")
    g.add_argument(
        "--headroom",
        type=flag_type(share),
        default=0.2,
        help="share of each instance's measured throughput kept free at peak",
    )
    g.add_argument(
        "--price-basis",
        choices=(*PRICE_BASES, ALL_BASES) if all_bases else PRICE_BASES,
        default="on-demand",
        help="how the hardware is paid for"
        + (
            f"; {ALL_BASES}: every basis side by side (the plan itself on on-demand)"
            if all_bases
            else ""
        ),
    )
    g.add_argument(
        "--price",
        type=_price,
        action="append",
        default=[],
        metavar="HW=$/hr",
        help="the $/hr you pay for HW on that basis (repeatable); overrides the profile",
    )
    return g


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="harness.plan",
        description="Turn result rows (any number of folders, from any machines) into a "
        "deployment plan: for a rate, a peak factor and a latency limit, the hardware × engine × "
        "precision that serves it at the lowest $/month, with whole instances, headroom and the "
        "artifact to deploy. Nothing is extrapolated.",
    )
    p.add_argument(
        "results",
        nargs="+",
        metavar="RESULTS",
        help="results .csv / .parquet files, or folders searched recursively for them",
    )
    g = add_load_args(p, required=True, all_bases=True)
    lim = g.add_mutually_exclusive_group(required=True)
    lim.add_argument(
        "--p99-ms", type=flag_type(positive_float), help="latency limit on each point's p99"
    )
    lim.add_argument(
        "--p95-ms", type=flag_type(positive_float), help="latency limit on each point's p95"
    )
    g = p.add_argument_group("which rows")
    for flag in FILTERS:
        g.add_argument(f"--{flag}", default=None, help=f"only rows with this {flag} (a comma list)")
    g.add_argument(
        "--references",
        action="store_true",
        help=f"also price the published figures (marked {MARKER}; never ranked with ours) "
        f"and, for embeddings, the API list prices (marked {BUY_MARKER}: buy against build)",
    )
    g = p.add_argument_group("output")
    g.add_argument("--format", choices=("table", "json"), default="table", help="stdout format")
    g.add_argument("--json", metavar="FILE", default=None, help="also write the plan as JSON")
    g.add_argument(
        "--report",
        metavar="FILE",
        default=None,
        help="also write the HTML report (plan view first) to FILE and report.md next to it",
    )
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def demand_from(args: argparse.Namespace, metric: str | None = None, limit=None) -> Demand:
    """The Demand the flags describe (`metric`/`limit`: harness.report's latency flags)."""
    if metric is None:
        metric, limit = ("p99", args.p99_ms) if args.p99_ms is not None else ("p95", args.p95_ms)
    return Demand(
        rate=parse_rate(args.rate),
        limit_ms=limit,
        metric=metric,
        peak=args.peak,
        headroom=args.headroom,
        basis="on-demand" if args.price_basis == ALL_BASES else args.price_basis,
        prices=tuple(args.price),
        rate_text=args.rate,
    )


def filters_from(args: argparse.Namespace) -> dict[str, list[str]]:
    return {
        flag: [v.strip() for v in str(getattr(args, flag)).split(",") if v.strip()]
        for flag in FILTERS
        if getattr(args, flag)
    }


def print_plan(console, plan) -> None:
    """The plan as the console shows it: the load, the answer per workload, then the tables."""
    from rich.markup import escape
    from rich.table import Table as RichTable

    from analysis.planview import deploy_lines, plan_tables

    console.print(f"[bold]Plan[/] for {escape(plan.demand.describe())}", soft_wrap=True)
    files = (
        plan.files if len(plan.files) <= 4 else [*plan.files[:3], f"… {len(plan.files) - 3} more"]
    )
    console.print(
        f"rows from {len(plan.files)} file(s): {escape(', '.join(files))}",
        soft_wrap=True,
        highlight=False,
    )
    for line in deploy_lines(plan):
        console.print(f"[green]→[/] {escape(line)}", soft_wrap=True, highlight=False)
    for t in plan_tables(plan, compact=True):
        rt = RichTable(title=escape(t.caption), title_justify="left", show_lines=False)
        for i, h in enumerate(t.headers):
            widest = max((len(cells[i]) for cells in t.rows), default=0)
            # names and images keep a readable width; everything else wraps as rich sees fit
            keep = min(widest, 18) if h in ("engine / image", "concurrency", "model") else None
            rt.add_column(h, min_width=keep, overflow="fold")
        for cells, cls in zip(t.rows, t.classes, strict=True):
            style = "italic cyan" if cls in ("published", "buy") else None
            rt.add_row(*(escape(c) for c in cells), style=style)
        console.print(rt)
    sources: dict[str, list[str]] = {}
    for o in plan.published:
        sources.setdefault(o.source, []).append(f"{o.model_name} on {o.hw_type}")
    for src, what in sources.items():
        line = f"{MARKER} {', '.join(dict.fromkeys(what))}: {src}"
        console.print(escape(line), soft_wrap=True, highlight=False)
    apis = {f"{b.provider} {b.api_model}": f"{b.source} ({b.date})" for b in plan.buy}
    for api, src in apis.items():
        console.print(escape(f"{BUY_MARKER} {api}: {src}"), soft_wrap=True, highlight=False)
    for note in plan.notes:
        console.print(f"[dim]note:[/] {escape(note)}", soft_wrap=True, highlight=False)


def run(args: argparse.Namespace, console) -> int:
    from analysis import render
    from analysis.buy import read_api_prices
    from analysis.frames import load
    from analysis.reporting import charts_or_none, read_references

    demand = demand_from(args)
    df = load(args.results)
    refs = read_references() if args.references else None
    plan = make_plan(
        df,
        demand,
        references=refs,
        filters=filters_from(args),
        api_prices=read_api_prices() if args.references else None,
        all_bases=args.price_basis == ALL_BASES,
    )
    if args.format == "json":
        sys.stdout.write(json.dumps(plan.to_json(), indent=2, default=str) + "\n")
    else:
        print_plan(console, plan)
    if args.json:
        Path(args.json).write_text(json.dumps(plan.to_json(), indent=2, default=str) + "\n")
    if args.report:
        html, md = render.write(
            df,
            args.report,
            metric=demand.metric,
            limit_ms=demand.limit_ms,
            charts=charts_or_none(),
            plan=plan,
            references=refs,
        )
        where = f"{html} (summary {md.name})" if html else f"{md} (no plotly: no HTML)"
        (console if args.format == "table" else _stderr()).print(
            f"report: {where}", highlight=False
        )
    return 0


def _stderr():
    from rich.console import Console

    return Console(stderr=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda console: run(args, console), verbose=getattr(args, "verbose", False))


if __name__ == "__main__":
    sys.exit(main())
