"""Assemble the views into one offline HTML file and a Markdown summary."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from analysis import frames, planview, views
from analysis.references import MARKER
from analysis.report_tables import Table, integer, missing, money, ms, num, pct, text, versions
from core.energy import NOT_MEASURED
from harness.results import quality_failed

INSTALL_HINT = "pip install 'billionbench[report]'"


@dataclass
class Section:
    """One part of the report: a title, how to read it, and its tables, notes and charts."""

    id: str
    title: str
    how: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: list[Callable] = field(default_factory=list)  # each -> a plotly Figure or None
    lead: list[str] = field(default_factory=list)  # the answer, shown before the charts


Cells = Callable[[pd.Series], list[str]]


def _cls(r) -> str:
    return "synthetic" if r["synthetic"] else ""


def _image(r) -> str:
    """The engine / image cell: the image plus its synthetic label, e.g. ' [fake engine]'."""
    return r["image"] + r["label"]


def _table(
    headers: list[str], rows: pd.DataFrame, cells: Cells, cls=_cls, caption: str = ""
) -> Table:
    """One table row per DataFrame row: `cells(r)` gives its cells, `cls(r)` its class."""
    t = Table(headers, caption=caption)
    for _, r in rows.iterrows():
        t.add(cells(r), cls(r))
    return t


def _best_table(best: pd.DataFrame) -> Table:
    headers = [
        "task",
        "$ / 1B inputs",
        "hardware",
        "engine / image",
        "mode",
        "batch",
        "VUs or n_models × workers",
        "inputs / request",
        "p95 ms",
        "p99 ms",
        "p99 ≤ (95 %)",
        "throughput (inputs/s)",
        "95 % interval",
        "host",
        "model",
    ]
    return _table(
        headers,
        best,
        lambda r: [
            r["task"],
            money(r["1B_cost"]),
            r["hw_type"],
            _image(r),
            r["mode"],
            integer(r["batch_size"]),
            r["concurrency"],
            integer(r["inputs_per_request"]),
            ms(r["p95_latency_ms"]),
            ms(r["p99_latency_ms"]),
            _bound(r),
            num(r["throughput_req_per_sec"]) + (" (disturbed)" if _disturbed(r) else ""),
            _interval(r),
            r["host_name"],
            text(r["model_name"]),
        ],
    )


def _bound(r) -> str:
    """The p99's distribution-free 95 % upper bound, or why there is none."""
    v = r.get("p99_upper_ms")
    if not missing(v):
        return ms(v)
    resolved = r.get("p99_resolved")
    unresolved = isinstance(resolved, bool | np.bool_) and not bool(resolved)
    return "not resolved" if unresolved else "-"


def _interval(r) -> str:
    """'120.1–131.4 (batch-means)': the throughput's 95 % interval and how it was made."""
    lo, hi = r.get("throughput_ci_low"), r.get("throughput_ci_high")
    if missing(lo) or missing(hi):
        return "-"
    return f"{num(lo)}–{num(hi)} ({r.get('throughput_ci_method') or '?'})"


def _disturbed(r) -> bool:
    v = r.get("disturbed")
    return isinstance(v, bool | np.bool_) and bool(v)


def _best(df: pd.DataFrame, metric: str, limit_ms: float | None) -> Section:
    best = views.best_configs(df, metric)
    s = Section(
        "best",
        "Best configuration per task × hardware",
        "The cheapest measured row for each task on each hardware (lowest $ per 1B inputs); "
        "the second table keeps only rows within your latency limit.",
    )
    s.tables.append(_best_table(best))
    if limit_ms is None:
        s.notes.append(
            "No latency limit given: pass --latency-limit-ms X (with --latency-metric) or "
            "--max-p99-ms X to see the best configuration within it."
        )
        return s
    within = views.best_configs(df, metric, limit_ms)
    t = _best_table(within)
    t.caption = f"best with {metric} latency ≤ {limit_ms:g} ms"
    s.tables.append(t)
    missing_pairs = sorted(
        set(map(tuple, best[["task", "hw_type"]].to_numpy()))
        - set(map(tuple, within[["task", "hw_type"]].to_numpy()))
    )
    for task, hw in missing_pairs:
        s.notes.append(f"{task} on {hw}: no configuration meets {metric} ≤ {limit_ms:g} ms.")
    return s


def _cost_latency(df: pd.DataFrame, metric: str, limit_ms: float | None, ch) -> Section:
    col = views.LATENCY_COLUMNS[metric]
    s = Section(
        "cost-latency",
        f"Cost vs {metric} latency",
        "Each point is one measured configuration; lower-left is better. The red dashed line is "
        "the Pareto front (no other run is both cheaper and faster), the star the global "
        "minimum, the dotted grey line the hardware's roofline floor. Symbol = hardware, colour "
        "= batch size; hover a point for its configuration.",
    )
    headers = [
        f"{metric} ms",
        "$ / 1B inputs",
        "hardware",
        "engine / image",
        "batch",
        "concurrency",
    ]
    for task, g in df.groupby("task"):
        t = _table(
            headers,
            views.pareto_front(g, col),
            lambda r: [
                ms(r[col]),
                money(r["1B_cost"]),
                r["hw_type"],
                _image(r),
                integer(r["batch_size"]),
                r["concurrency"],
            ],
            caption=f"{task}: Pareto front",
        )
        s.tables.append(t)
        if ch:
            s.figures.append(
                lambda g=g, task=task: ch.cost_vs_latency(
                    g, metric, limit_ms, f"{task}: $ per 1B inputs vs {metric} latency"
                )
            )
    return s


def _energy(df: pd.DataFrame, ch) -> Section:
    rows = views.energy_rows(df)
    s = Section(
        "energy",
        "Energy per input",
        "Joules per input over each row's timed window, read from the device's own counter "
        "(NVML on NVIDIA GPUs, RAPL on CPUs), and the same as kWh per 1B inputs, next to "
        "its $ per 1B. A counter covers the whole device (every process on that GPU or CPU "
        "package); the source column says which. Rows without a readable meter are left out; "
        "nothing is estimated.",
    )
    if rows.empty:
        s.notes.append(NOT_MEASURED)
        return s
    headers = [
        "task",
        "J / input",
        "kWh / 1B inputs",
        "$ / 1B inputs",
        "hardware",
        "engine / image",
        "mode",
        "batch",
        "concurrency",
        "source",
    ]
    s.tables.append(
        _table(
            headers,
            rows,
            lambda r: [
                r["task"],
                num(r["energy_j_per_input"], 4),
                num(r["kwh_per_1B"], 1),
                money(r["1B_cost"]),
                r["hw_type"],
                _image(r),
                r["mode"],
                integer(r["batch_size"]),
                r["concurrency"],
                text(r["energy_source"]),
            ],
        )
    )
    if rows["energy_j_per_input"].isna().any():
        s.notes.append(
            "Rows with a source but no joules carry a relative reading only (neuron-monitor "
            "reports power as a percentage of the device's maximum, not watts)."
        )
    if ch:
        s.figures.append(lambda: ch.energy(rows))
    return s


def _hardware(df: pd.DataFrame, ch) -> Section:
    hw = views.hardware_comparison(df)
    s = Section(
        "hardware",
        "Hardware comparison",
        "Per task, each hardware's best run side by side. × floor = 1B_cost ÷ roofline floor "
        "(1.0 would be every FLOP at the hardware's peak; lower is better); efficiency = its "
        "inverse. The hardware column is the profile the run was measured under (hw_type), "
        "the device column what was detected on that host.",
    )
    headers = [
        "task",
        "hardware",
        "devices",
        "best $ / 1B",
        "throughput (inputs/s)",
        "p99 ms",
        "floor $ / 1B",
        "× floor",
        "efficiency",
        "best engine / image",
        "runs",
        "hosts",
    ]
    t = _table(
        headers,
        hw,
        lambda r: [
            r["task"],
            r["hw_type"],
            r["devices"],
            money(r["best_1B_cost"]),
            num(r["throughput"]),
            ms(r["p99_latency_ms"]),
            money(r["floor_1B_cost"]),
            "-" if missing(r["cost_over_floor"]) else f"{r['cost_over_floor']:.2f}×",
            pct(100 * r["efficiency"]) if not missing(r["efficiency"]) else "-",
            _image(r),
            str(r["runs"]),
            r["hosts"],
        ],
        cls=lambda r: "synthetic" if r["label"] else "",
    )
    s.tables.append(t)
    if (hw["cost_over_floor"] < 1).any():
        s.notes.append(
            "Below 1× the floor: the row ran faster than the peak the floor assumes — e.g. an "
            "int8 run measured against the fp32 peak, or a CPU peak measured low on a busy host."
        )
    if ch:
        s.figures.append(lambda: ch.hardware(hw))
    return s


def _contour(df: pd.DataFrame, ch) -> Section:
    s = Section(
        "contour",
        "Cost over VUs × batch size",
        "Colour and contour lines are $ per 1B inputs, interpolated (inverse-distance weighting "
        "in log space) between the measured points (white); red dots are the cheapest VU count "
        "per batch size, the star the cheapest point. Tight contour lines mean cost changes "
        "fast there. One chart per task, hardware, mode and engine/image with at least two VU "
        "counts and two batch sizes; where runs share a point, the cheapest is drawn.",
    )
    keys = ["task", "hw_type", "mode", "image", "label"]
    for key, g in df.groupby(keys, dropna=False):
        if views.contour_grid(g) is None:
            continue
        task, hw_, mode, image, label = key
        title = f"{task} · {hw_} · {mode} · {image}{label}"
        if ch:
            s.figures.append(lambda g=g, t=title: ch.contour(g, t))
        per_batch = g.loc[views._valid(g, "1B_cost").groupby("batch_size")["1B_cost"].idxmin()]
        t = _table(
            ["batch", "cheapest VUs", "$ / 1B inputs", "p95 ms"],
            per_batch,
            lambda r: [
                integer(r["batch_size"]),
                integer(r["vus"]),
                money(r["1B_cost"]),
                ms(r["p95_latency_ms"]),
            ],
            caption=f"{title}: cheapest per batch size",
        )
        s.tables.append(t)
    if not s.tables:
        s.notes.append(
            "No series spans two VU counts and two batch sizes yet: sweep more of both "
            "(harness.sweep --max-batch-sizes 8,32 --vus-max 32) to get a surface."
        )
    return s


def _vus(df: pd.DataFrame, ch) -> Section:
    groups = views.vu_groups(df)
    s = Section(
        "vus",
        "Did we try enough VUs?",
        "For each series (same task, hardware, host, mode, engine/image, batch size) measured at "
        "two or more VU counts: if throughput still rises at the largest VU count tried (by "
        "more than the noise margin), the search stopped too early — flagged in red; rerun "
        "with a higher --vus-max.",
    )
    headers = [
        "status",
        "task",
        "hardware",
        "host",
        "file",
        "mode",
        "engine / image",
        "batch",
        "VUs tried",
        "throughput at max VUs",
        "last step gain",
        "noise margin",
    ]
    t = _table(
        headers,
        groups,
        lambda r: [
            "STILL RISING" if r["still_rising"] else "peaked",
            r["task"],
            r["hw_type"],
            r["host_name"],
            r["source_file"],
            r["mode"],
            _image(r),
            integer(r["batch_size"]),
            r["vus_tried"],
            num(r["throughput_at_max"]),
            pct(100 * r["last_gain"]),
            pct(100 * r["margin"]),
        ],
        cls=lambda r: "flag" if r["still_rising"] else ("synthetic" if r["label"] else ""),
    )
    s.tables.append(t)
    if groups.empty:
        s.notes.append("No series was measured at two or more VU counts.")
    elif ch:
        s.figures.append(lambda: ch.vus_lines(df, groups))
    return s


def _savings(df: pd.DataFrame, ch) -> Section:
    sav = views.engine_savings(df)
    s = Section(
        "savings",
        "Engine savings",
        "Runs on the same hardware with the same batch size and concurrency, grouped; the "
        "cheapest engine/image of each group against every other one, and how much cheaper "
        "it is. Each image is represented by its cheapest run in the group.",
    )
    headers = [
        "task",
        "hardware",
        "mode",
        "batch",
        "concurrency",
        "cheaper",
        "$ / 1B",
        "than",
        "$ / 1B",
        "saving",
    ]
    t = _table(
        headers,
        sav,
        lambda r: [
            r["task"],
            r["hw_type"],
            r["mode"],
            integer(r["batch_size"]),
            r["concurrency"],
            r["cheaper"],
            money(r["cheaper_cost"]),
            r["than"],
            money(r["than_cost"]),
            pct(r["savings_pct"]),
        ],
        cls=lambda r: "",
    )
    s.tables.append(t)
    if sav.empty:
        s.notes.append("No two engines/images were measured under the same conditions.")
    elif ch:
        s.figures.append(lambda: ch.savings(sav))
    return s


def _sanity(df: pd.DataFrame, ch) -> Section:
    s = Section(
        "sanity",
        "Sanity checks",
        "Sanity checks over every row: no failed requests, no invalid outputs, the expected "
        "embedding size, plausible vector counts, and accuracy that does not move between "
        "configurations (accuracy is meaningless with random weights).",
    )
    t = Table(["check", "result", "detail"])
    for c in views.sanity(df):
        if c.name != "did we try enough VUs?":
            t.add([c.name, "PASS" if c.passed else "FAIL", c.detail], "" if c.passed else "flag")
    s.tables.append(t)
    bad = df[(df["failed_requests"].fillna(0) > 0) | (df["invalid_embeddings"].fillna(0) > 0)]
    if not bad.empty:
        headers = [
            "task",
            "hardware",
            "engine / image",
            "batch",
            "concurrency",
            "failed",
            "invalid",
        ]
        t = _table(
            headers,
            bad,
            lambda r: [
                r["task"],
                r["hw_type"],
                _image(r),
                integer(r["batch_size"]),
                r["concurrency"],
                integer(r["failed_requests"]),
                integer(r["invalid_embeddings"]),
            ],
            cls=lambda r: "flag",
            caption="rows with failed requests or invalid outputs",
        )
        s.tables.append(t)
    vec = df[["min_num_vectors", "avg_num_vectors", "max_num_vectors"]].dropna(how="all")
    if not vec.empty:
        t = Table(["", "min", "avg", "max"], caption="vectors per input over all runs")
        t.add(
            [
                "num vectors",
                num(vec["min_num_vectors"].min(), 0),
                num(vec["avg_num_vectors"].mean(), 2),
                num(vec["max_num_vectors"].max(), 0),
            ]
        )
        s.tables.append(t)
    if ch:
        s.figures += [lambda: ch.vectors(df), lambda: ch.accuracy(df)]
    return s


def _neuronperf(df: pd.DataFrame) -> Section:
    npf = views.neuronperf_table(df)
    s = Section(
        "neuronperf",
        "In-process results (neuronperf layout)",
        "In-process runs, neuronperf's layout: latency_ms_* time the model forward only; "
        "throughput and cost count inputs; sequence length is the workload's avg / max tokens.",
    )
    headers = [
        "task",
        "hardware",
        "engine / image",
        "batch_size",
        "sequence length (avg / max)",
        "latency_ms_p50",
        "latency_ms_p99",
        "throughput_avg",
        "n_models",
        "workers_per_model",
        "cost_per_1m_inf",
    ]
    t = _table(
        headers,
        npf,
        lambda r: [
            r["task"],
            r["hw_type"],
            _image(r),
            integer(r["batch_size"]),
            f"{num(r['avg_tokens'])} / {integer(r['max_tokens'])}",
            num(r["latency_ms_p50"], 3),
            num(r["latency_ms_p99"], 3),
            num(r["throughput_avg"], 3),
            integer(r["n_models"]),
            integer(r["workers_per_model"]),
            "-" if missing(r["cost_per_1m_inf"]) else f"{r['cost_per_1m_inf']:.3f}",
        ],
    )
    s.tables.append(t)
    if npf.empty:
        s.notes.append("No in-process rows (harness.run) among the inputs.")
    return s


def _duplicates(dup: pd.DataFrame) -> Section:
    s = Section(
        "duplicates",
        f"Duplicate configurations ({dup['config_key'].nunique()})",
        "Configurations (same config_key) measured more than once — on one host or across "
        "files. Every measurement is listed and used as is in the views above; none is averaged.",
    )
    headers = ["config_key", "host", "file", "row", "engine / image", "batch", "$ / 1B", "p95 ms"]
    t = _table(
        headers,
        dup,
        lambda r: [
            r["config_key"],
            r["host_name"],
            r["source_file"],
            str(r["source_row"]),
            _image(r),
            integer(r["batch_size"]),
            money(r["1B_cost"]),
            ms(r["p95_latency_ms"]),
        ],
    )
    s.tables.append(t)
    if dup.empty:
        s.notes.append("None: every configuration was measured once.")
    return s


def _quality(df: pd.DataFrame) -> Section:
    s = Section(
        "quality",
        "Output quality",
        "Rows whose server's answers were checked against a reference model (harness.sweep "
        "--reference-model, scripts/bench_peers.sh): min / mean cosine of its embeddings, or "
        "label agreement for a classifier, on a sample of the run's own inputs. A row under the "
        "gate is FAILING QUALITY: it is listed here and left out of every best table and Pareto "
        "front above, whatever its speed.",
    )
    checked = df[df["quality_n"].notna()]  # prepare() gives every frame the schema's columns
    if checked.empty:
        s.notes.append("No row was checked: pass --reference-model to harness.sweep.")
        return s
    checked = checked.sort_values(["task", "quality_passed", "1B_cost"], na_position="last")
    headers = ["verdict", "task", "engine / image", "file", "inputs checked", "min cosine"]
    headers += ["mean cosine", "label agreement", "gate", "$ / 1B"]
    s.tables.append(
        _table(
            headers,
            checked,
            lambda r: [
                "FAILING QUALITY" if quality_failed(r) else "passed",
                r["task"],
                _image(r),
                r["source_file"],
                integer(r["quality_n"]),
                num(r["quality_min_cosine"], 5),
                num(r["quality_mean_cosine"], 5),
                num(r["quality_label_agreement"], 4),
                num(r["quality_gate"], 4),
                money(r["1B_cost"]),
            ],
            cls=lambda r: "flag" if quality_failed(r) else _cls(r),
        )
    )
    failing = int(checked.apply(quality_failed, axis=1).sum())
    s.lead.append(f"{failing} of {len(checked)} checked rows are FAILING QUALITY.")
    return s


def _joined(values: pd.Series) -> str:
    """Distinct non-missing values as text, sorted and comma-separated ('-' when none)."""
    return ", ".join(sorted({str(v) for v in values.dropna()})) or "-"


def _plan(plan, ch) -> Section:
    d = plan.demand
    s = Section(
        "plan",
        "Deployment plan",
        f"For your load ({d.describe()}): per workload, each hardware × engine × precision's "
        f"measured point that meets the limit with the most inputs/s per instance, the whole "
        f"instances it needs at peak, $/month and the effective $/1B at the mean rate (idle "
        f"capacity included), × floor = that $/1B ÷ the roofline floor. Nothing is extrapolated. "
        f"The chart prices every candidate point as if it were chosen: chosen points are large, "
        f"published ones ({MARKER}) hollow, the red dashed line is the limit.",
    )
    s.lead += planview.deploy_lines(plan)
    s.notes += plan.notes
    s.tables += planview.plan_tables(plan)
    if ch and not plan.scan.empty:
        for task in dict.fromkeys(plan.scan["task"]):
            s.figures.append(lambda task=task: ch.plan_chart(plan.scan, task, d))
    return s


def _published(refs: pd.DataFrame) -> Section:
    s = Section(
        "published",
        f"Published figures ({MARKER}, not measured here)",
        "Reference rows from the seeds, AWS's Neuron docs and NVIDIA's TensorRT demoBERT, as "
        "published, each with its source, the price basis it was computed on and where it was "
        "measured (in process, over HTTP, across the network). They are not in any measured "
        "table or chart above; derived columns say how they were derived.",
    )
    headers = [
        "",
        "task",
        "model",
        "hardware",
        "engine / image",
        "batch",
        "concurrency",
        "inputs/s",
        "p99 ms",
        "fwd p99 ms",
        "$ / 1M (published)",
        "$ / 1B (published)",
        "price basis",
        "boundary",
        "source",
        "derivation",
    ]
    s.tables.append(
        _table(
            headers,
            refs,
            lambda r: [
                MARKER,
                r["task"],
                text(r["model_name"]),
                r["hw_type"],
                r["image"],
                integer(r["batch_size"]),
                r["concurrency"],
                num(r["throughput_req_per_sec"]),
                ms(r["p99_latency_ms"]),
                ms(r["latency_ms_p99"]),
                "-" if missing(r["cost_per_1m_inf"]) else f"${r['cost_per_1m_inf']:.3f}",
                money(r["1B_cost"]),
                text(r["price_basis"]),
                text(r["measurement_boundary"]),
                text(r["source"]),
                text(r["derivation"]),
            ],
            cls=lambda r: "published",
        )
    )
    return s


def _provenance(df: pd.DataFrame) -> Section:
    s = Section(
        "provenance",
        "What was measured, and where",
        "One line per input file: the hosts and devices its rows were measured on, library "
        "versions, whether the model weights were real, and the git commit of the harness.",
    )
    t = Table(
        [
            "file",
            "rows",
            "hosts",
            "hardware (hw_type)",
            "devices",
            "weights",
            "engines",
            "git sha",
            "measured",
            "library versions",
        ]
    )
    for f, g in df.groupby("source_file", sort=False):
        ts = g["timestamp"].dropna().astype(str)
        t.add(
            [
                f,
                str(len(g)),
                ", ".join(sorted(set(g["host_name"]))),
                ", ".join(sorted(set(g["hw_type"]))),
                _joined(g["device_name"]),
                _joined(g["weights"]),
                ", ".join(sorted(set(g["engine"]))),
                _joined(g["git_sha"]),
                f"{ts.min()} – {ts.max()}" if len(ts) else "-",
                "; ".join(sorted({versions(v) for v in g["tool_versions"].dropna()})) or "-",
            ],
            "synthetic" if g["synthetic"].astype(bool).any() else "",
        )
    s.tables.append(t)
    return s


def build(
    df: pd.DataFrame,
    *,
    metric: str = "p95",
    limit_ms: float | None = None,
    charts: ModuleType | None = None,
    plan=None,
    references: pd.DataFrame | None = None,
) -> tuple[dict, list[Section]]:
    """The report's content, independent of the output format; figures only with `charts`.

    `plan` (analysis.planner.Plan) puts the deployment plan first; `references` (published
    rows) adds their own section: neither enters a measured view.
    """
    ch = charts
    dup = frames.duplicates(df)
    sections = [
        *([_plan(plan, ch)] if plan is not None else []),
        _best(df, metric, limit_ms),
        _cost_latency(df, metric, limit_ms, ch),
        _energy(df, ch),
        _hardware(df, ch),
        _contour(df, ch),
        _vus(df, ch),
        _savings(df, ch),
        _sanity(df, ch),
        _quality(df),
        _neuronperf(df),
        _duplicates(dup),
        _provenance(df),
        *([_published(references)] if references is not None else []),
    ]
    synth = df[df["synthetic"] != ""]
    head = {
        "files": df["source_file"].nunique(),
        "rows": len(df),
        "tasks": sorted(set(df["task"])),
        "hardware": sorted(set(df["hw_type"])),
        "hosts": sorted(set(df["host_name"])),
        "engines": sorted(set(df["engine"])),
        "synthetic": synth["synthetic"].value_counts().to_dict(),
        "duplicates": dup["config_key"].nunique(),
        "metric": metric,
        "limit_ms": limit_ms,
        "published": 0 if references is None else len(references),
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    return head, sections


def _summary(head: dict) -> list[str]:
    lines = [
        f"{head['rows']} measured configurations from {head['files']} file(s) · tasks: "
        f"{', '.join(head['tasks'])} · hardware: {', '.join(head['hardware'])} · hosts: "
        f"{', '.join(head['hosts'])} · engines: {', '.join(head['engines'])}",
    ]
    if head["synthetic"]:
        what = ", ".join(f"{n} with {k}" for k, n in head["synthetic"].items())
        lines.append(
            f"Not real model measurements: {what}. Rows measured with random weights or the "
            "fake engine are marked [random weights] / [fake engine] in every table and hover; "
            "their latency and throughput are valid for the architecture, their predictions "
            "(accuracy) are not."
        )
    if head.get("published"):
        lines.append(
            f"{head['published']} published figures ({MARKER}) appear only in the plan and in "
            "Published figures, each with its source; they are never counted as measured."
        )
    if head["duplicates"]:
        lines.append(
            f"{head['duplicates']} configuration(s) were measured more than once: see "
            "Duplicate configurations; nothing is averaged."
        )
    return lines


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#fafafa}
main{max-width:1500px;margin:0 auto;padding:16px 28px}
h1{font-size:26px;margin:8px 0}h2{font-size:20px;margin:28px 0 4px;border-top:1px solid #ddd;
padding-top:14px}
.how{color:#444;margin:4px 0 10px;max-width:1100px}.how b{color:#222}
.banner{background:#fff4e5;border:1px solid #f0b35b;padding:8px 12px;margin:8px 0;
border-radius:4px}
.summary{margin:4px 0}
nav a{margin-right:14px;font-size:14px}
.charts{display:grid;grid-template-columns:minmax(0,1fr);gap:14px}
.charts.two{grid-template-columns:repeat(2,minmax(0,1fr))}
@media (max-width:1100px){.charts.two{grid-template-columns:minmax(0,1fr)}}
.chart{background:#fff;border:1px solid #e3e3e3;border-radius:4px;min-width:0;overflow:hidden}
.table-wrap{overflow-x:auto;margin:8px 0 14px}
table{border-collapse:collapse;font-size:13px;background:#fff}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;white-space:nowrap}
th{background:#f0f0f0;white-space:normal;vertical-align:bottom}
tr.synthetic td{background:#fffaf0}
tr.flag td{background:#fde2e1;color:#a40000;font-weight:600}
tr.published td{background:#eef5fb;font-style:italic}
tr.floor td{color:#666;font-style:italic}
.lead{background:#eef7ee;border-left:4px solid #54a24b;padding:6px 10px;margin:6px 0;
max-width:1300px}
#published td{white-space:normal;min-width:70px}
.note{color:#555;font-style:italic}
#provenance td{white-space:normal;min-width:80px}
"""


def to_html(head: dict, sections: list[Section], plotly_js: str) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>billionbench report</title>",
        f"<style>{CSS}</style>",
        # plotly.js inlined once: the file works offline and loads nothing from a CDN
        f"<script type='text/javascript'>{plotly_js}</script>",
        "</head><body><main>",
        "<h1>billionbench report: cost per 1B inputs</h1>",
    ]
    lines = _summary(head)
    parts.append(f"<p class='summary'>{e(lines[0])}</p>")
    for line in lines[1:]:
        parts.append(f"<p class='banner'>{e(line)}</p>")
    parts.append(
        f"<p class='summary'>Latency metric: {e(head['metric'])}"
        + (f" · limit {head['limit_ms']:g} ms" if head["limit_ms"] is not None else "")
        + f" · generated {e(head['generated'])}</p>"
    )
    parts.append(
        "<nav>" + "".join(f"<a href='#{s.id}'>{e(s.title)}</a>" for s in sections) + "</nav>"
    )
    config = {"displaylogo": False, "responsive": True}
    for s in sections:
        parts.append(f"<section id='{s.id}'><h2>{e(s.title)}</h2>")
        parts.append(f"<p class='how'><b>How to read this:</b> {e(s.how)}</p>")
        for line in s.lead:
            parts.append(f"<p class='lead'>{e(line)}</p>")
        figs = [f() for f in s.figures]
        figs = [f for f in figs if f is not None]
        if figs:
            # columns are fixed before the charts render: plotly sizes each chart to its cell
            parts.append("<div class='charts two'>" if len(figs) > 1 else "<div class='charts'>")
            for f in figs:
                div = f.to_html(full_html=False, include_plotlyjs=False, config=config)
                parts.append(f"<div class='chart'>{div}</div>")
            parts.append("</div>")
        for n in s.notes:
            parts.append(f"<p class='note'>{e(n)}</p>")
        for t in s.tables:
            if t.rows:
                parts.append(t.html())
        parts.append("</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def to_markdown(head: dict, sections: list[Section], html_name: str | None) -> str:
    out = ["# billionbench report: cost per 1B inputs", ""]
    for line in _summary(head):
        out += [line, ""]
    out += [
        f"Latency metric: {head['metric']}"
        + (f" · limit {head['limit_ms']:g} ms" if head["limit_ms"] is not None else "")
        + f" · generated {head['generated']}",
        "",
    ]
    if html_name:
        out += [f"Charts: [{html_name}]({html_name}) (one offline HTML file).", ""]
    else:
        out += [f"Charts: not written (plotly is not installed; {INSTALL_HINT}).", ""]
    for s in sections:
        out += [f"## {s.title}", "", f"*How to read this:* {s.how}", ""]
        for line in s.lead:
            out += [f"**→** {line}", ""]
        for n in s.notes:
            out += [f"> {n}", ""]
        for t in s.tables:
            if t.rows:
                out += [t.markdown(), ""]
    return "\n".join(out).rstrip() + "\n"


def write(
    df: pd.DataFrame,
    out: str | Path,
    *,
    metric: str = "p95",
    limit_ms: float | None = None,
    charts: ModuleType | None = None,
    plan=None,
    references: pd.DataFrame | None = None,
) -> tuple[Path | None, Path]:
    """Write report.md next to <out>, and <out> (HTML) when given the `charts` module (plotly)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    head, sections = build(
        df, metric=metric, limit_ms=limit_ms, charts=charts, plan=plan, references=references
    )
    md_path = out.with_suffix(".md") if out.suffix == ".html" else out.parent / "report.md"
    html_path: Path | None = None
    if charts is not None:
        from plotly.offline import get_plotlyjs

        doc = to_html(head, sections, get_plotlyjs())
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(doc, encoding="utf-8")
        tmp.replace(out)
        html_path = out
    md_path.write_text(
        to_markdown(head, sections, html_path.name if html_path else None), encoding="utf-8"
    )
    return html_path, md_path
