"""The plan (analysis.planner) as tables: the same cells in the console, HTML and Markdown."""

from __future__ import annotations

from analysis.planner import PRICE_BASES, Option, Plan
from analysis.references import BUY_MARKER, MARKER
from analysis.report_tables import Table, integer, missing, money, ms, num, pct, text


def _floor(o: Option) -> str:
    return "-" if o.cost_over_floor is None else f"{o.cost_over_floor:,.1f}×"


def _latency(o: Option) -> str:
    if missing(o.latency_ms):
        return "not published"
    return ms(o.latency_ms) + (" (forward)" if o.latency_column.startswith("latency_ms_") else "")


def hourly(v) -> str:
    """$/hr with the precision prices are published at ($0.067, $0.80, $12.98)."""
    return "-" if missing(v) else (f"${v:.3f}" if v < 1 else f"${v:,.2f}")


def instances_range(o: Option) -> str:
    """'11–12': at the point estimate – on the lower bound (one number when they agree)."""
    if not o.instances_point or o.instances_point == o.instances:
        return f"{o.instances:,}"
    return f"{o.instances_point:,}–{o.instances:,}"


def monthly_range(o: Option) -> str:
    if not o.instances_point or o.instances_point == o.instances:
        return money(o.monthly_cost)
    return f"{money(o.monthly_cost_point)}–{money(o.monthly_cost)}"


def _artifact(o: Option) -> str:
    return o.artifact.get("describe", "-")


# (heading, cell) for every plan column; `compact` keeps the ones a 160-column console shows
COLUMNS = [
    ("#", lambda o: str(o.rank), True),
    ("hardware", lambda o: o.hw_type, True),
    ("engine / image", lambda o: o.image + o.label, True),
    ("precision", lambda o: o.precision, False),
    ("boundary", lambda o: o.boundary, False),
    ("batch", lambda o: integer(o.batch_size), True),
    ("concurrency", lambda o: text(o.concurrency), True),
    ("inputs/s each", lambda o: num(o.throughput), True),
    ("{metric} ms", _latency, True),
    ("instances", instances_range, True),
    ("$/hr", lambda o: hourly(o.price_per_hour), False),
    ("$/month", monthly_range, True),
    ("effective $/1B", lambda o: money(o.effective_cost_per_1b), True),
    ("$/1B at full load", lambda o: money(o.full_load_cost_per_1b), False),
    ("util mean/peak", lambda o: f"{o.utilisation_mean:.0%} / {o.utilisation_peak:.0%}", True),
    ("free at peak", lambda o: pct(100 * o.free_at_peak), False),
    ("× floor", _floor, True),
    ("artifact", _artifact, False),
    ("parity", lambda o: o.parity, False),
    ("host", lambda o: o.host_name, False),
]
_CONSOLE_PUBLISHED = {"hardware", "precision", "batch", "inputs/s each", "{metric} ms", "instances"}
PUBLISHED_COLUMNS = [
    ("", lambda o: MARKER, True),
    ("task", lambda o: o.task, True),
    ("model", lambda o: o.model_name, True),
    *[
        (h, cell, h in _CONSOLE_PUBLISHED or h in ("$/month", "effective $/1B"))
        for h, cell, _ in COLUMNS
        if h not in ("#", "artifact", "parity", "host", "× floor")
    ],
    ("published price basis", lambda o: o.price_basis_published, False),
    ("source", lambda o: o.source, False),
]


# shorter headings where a console row must fit 160 columns
SHORT = {
    "hardware": "hw",
    "inputs/s each": "inputs/s",
    "effective $/1B": "eff. $/1B",
    "util mean/peak": "util avg/pk",
}


def _table(cols, options: list[Option], metric: str, caption: str, compact: bool, cls="") -> Table:
    cols = [c for c in cols if c[2] or not compact]
    heads = [SHORT.get(h, h) if compact else h for h, _, _ in cols]
    t = Table([h.format(metric=metric) for h in heads], caption=caption)
    for o in options:
        t.add([cell(o) for _, cell, _ in cols], cls or ("synthetic" if o.label else ""))
    return t


def plan_tables(plan: Plan, *, compact: bool = False) -> list[Table]:
    """One ranked table per workload, then the published rows, the floors, the unmet groups."""
    metric = plan.demand.metric
    out = []
    for task, model in plan.workloads():
        opts = [o for o in plan.options if (o.task, o.model_name) == (task, model)]
        caption = (
            f"{task} · {model}: measured, ranked by $/month (inputs/s per instance; effective "
            "$/1B at the mean rate)"
        )
        out.append(_table(COLUMNS, opts, metric, caption, compact))
    if plan.published:
        caption = (
            f"{MARKER} figures (not measured here, never ranked with ours): priced on the "
            f"same {plan.demand.basis} basis, best published point per model × hardware"
        )
        out.append(_table(PUBLISHED_COLUMNS, plan.published, metric, caption, compact, "published"))
    if plan.bases:
        out.append(bases_table(plan, compact))
    if plan.buy:
        out.append(buy_table(plan, compact))
    if plan.floors:
        t = Table(
            ["task", "model", "hardware", "floor $/1B", "floor $/month", "$/hr", "label"]
            + ([] if compact else ["price source"]),
            caption="hardware without measured rows: the roofline floor only (every FLOP at the "
            "dense fp16/bf16 peak, no instance rounding; not a plan: no throughput was measured)",
        )
        for f in plan.floors:
            t.add(
                [
                    f["task"],
                    f["model_name"],
                    f["hw_type"],
                    money(f["floor_cost_per_1b"]),
                    money(f["floor_monthly_cost"]),
                    hourly(f["price_per_hour"]),
                    f["label"],
                ]
                + ([] if compact else [f["price_source"]]),
                "floor",
            )
        out.append(t)
    return out


def deploy_lines(plan: Plan) -> list[str]:
    """Per workload, the one-paragraph answer: what to deploy, how many, what it costs."""
    d = plan.demand
    lines = []
    for task, model in plan.workloads():
        o = plan.best(task, model)
        floor = (
            "" if o.cost_over_floor is None else f", {o.cost_over_floor:,.1f}× the roofline floor"
        )
        lines.append(
            f"{task} · {model}: deploy {o.instances:,} × {o.hw_type} running {o.image}{o.label} "
            f"(batch {integer(o.batch_size)}, {o.concurrency}, {o.boundary}) → "
            f"{money(o.monthly_cost)}/month at {d.basis} prices{_range(o)} ({hourly(o.price_per_hour)}/hr, "
            f"{o.price_source}); effective {money(o.effective_cost_per_1b)} per 1B at the mean "
            f"rate{floor}; {d.metric} {_latency(o)} ms ({_bound(o)}); sized on the "
            f"{o.sizing}; utilisation "
            f"{o.utilisation_mean:.0%} at the mean, {o.utilisation_peak:.0%} at peak "
            f"({o.free_at_peak:.0%} free); artifact: {_artifact(o)}; parity: {o.parity}"
        )
        lines += [f"  ⚠ {flag}" for flag in o.flags]
        lines += [
            f"  {BUY_MARKER} {b.provider} {b.api_model} ({b.tier}, ${b.usd_per_1m_tokens:g}/1M "
            f"tokens × {b.tokens_per_input:,.1f} tokens/input, {b.tokens_from}): "
            f"{money(b.cost_per_1b)} per 1B, {money(b.monthly_cost)}/month; {b.verdict}"
            for b in plan.buy
            if (b.task, b.model_name) == (task, model)
        ]
    return lines


def _range(o: Option) -> str:
    if not o.instances_point or o.instances_point == o.instances:
        return ""
    return (
        f" (the point estimate needs {o.instances_point:,}: {money(o.monthly_cost_point)}/month; "
        "the bound is what to buy)"
    )


def _bound(o: Option) -> str:
    if o.latency_column.endswith("_upper_ms"):
        return "95 % upper bound"
    return "point estimate, not bounded"


def _basis_cells(cell: dict) -> list[str]:
    if "refused" in cell:
        return ["—", f"— ({cell['refused']})"]
    return [money(cell["effective_cost_per_1b"]), money(cell["monthly_cost"])]


def bases_table(plan: Plan, compact: bool) -> Table:
    """`--price-basis all`: each measured option's instances on every price basis."""
    heads = ["task", "#", "hardware", "engine / image", "instances"]
    for basis in PRICE_BASES:
        heads += [f"{basis} $/1B", f"{basis} $/month"]
    t = Table(
        heads + ([] if compact else [f"{b} source" for b in PRICE_BASES]),
        caption="price bases side by side: the same instances on each basis (effective $/1B at "
        "the mean rate; — where a basis has no published figure, with the reason)",
    )
    for b in plan.bases:
        cells = [b["task"], str(b["rank"]), b["hw_type"], b["image"] + b["label"]]
        cells.append(f"{b['instances']:,}")
        for basis in PRICE_BASES:
            cells += _basis_cells(b["bases"][basis])
        if not compact:
            cells += [b["bases"][x].get("price_source", "-") for x in PRICE_BASES]
        t.add(cells)
    return t


def buy_table(plan: Plan, compact: bool) -> Table:
    """The API list prices beside the best measured option: marked, never ranked."""
    d = plan.demand
    t = Table(
        ["", "task", "model", "API", "tier", "$/1M tokens", "tokens/input", "$/1B", "$/month",
         "build (#1) $/1B", "build vs buy"]
        + ([] if compact else ["tokens from", "source", "date"]),
        caption=f"{BUY_MARKER}: embedding API list prices (not measured, never ranked with ours), "
        f"converted with the tokens per input measured in the rows; $/month at the mean rate "
        f"({d.rate:,.1f} inputs/s), against the #1 measured option at {d.basis} prices",
    )  # fmt: skip
    for b in plan.buy:
        t.add(
            [
                BUY_MARKER,
                b.task,
                b.model_name,
                f"{b.provider} {b.api_model}",
                b.tier,
                f"${b.usd_per_1m_tokens:g}",
                num(b.tokens_per_input),
                money(b.cost_per_1b),
                money(b.monthly_cost),
                money(b.build_cost_per_1b),
                b.verdict,
            ]
            + ([] if compact else [b.tokens_from, b.source, b.date]),
            "buy",
        )
    return t
