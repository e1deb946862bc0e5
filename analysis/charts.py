"""Plotly figures for the report: cost vs throughput, cost over VUs x batch. Imported only
when plotly is installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis import views
from analysis.report_tables import money, ms, num
from harness.hardware import PROFILES

SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "cross", "pentagon", "hexagon"]
FONT = dict(family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size=13)
COST_TITLE = "$ per 1B inputs"
STAR = dict(size=18, color="red", symbol="star", line=dict(width=1.5, color="black"))


def _layout(fig: go.Figure, title: str, subtitle: str = "", height: int = 480) -> go.Figure:
    t = f"{title}<br><sup>{subtitle}</sup>" if subtitle else title
    fig.update_layout(
        title=dict(text=t, x=0.5, xanchor="center", font=dict(size=16)),
        font=FONT,
        height=height,
        template="plotly_white",
        margin=dict(l=70, r=30, t=80, b=70),
        legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0),
        hoverlabel=dict(align="left"),
    )
    return fig


def hover(r) -> str:
    """Everything that identifies a measured row, for hover text."""
    ipr = r.get("inputs_per_request")
    return "<br>".join(
        [
            f"<b>{money(r['1B_cost'])} per 1B inputs</b>{r['label']}",
            f"{r['task']} · {r['hw_type']} · host {r['host_name']}",
            f"{r['image']} · {r['mode']}",
            f"batch {num(r['batch_size'], 0)} · {r['concurrency']}"
            + (f" · {num(ipr, 0)} inputs/request" if pd.notna(ipr) else ""),
            f"p95 {ms(r['p95_latency_ms'])} ms · p99 {ms(r['p99_latency_ms'])} ms · "
            f"avg {ms(r['avg_latency_ms'])} ms",
            f"throughput {num(r['throughput_req_per_sec'])} inputs/s",
            f"{r['source_file']} row {r['source_row']}",
        ]
    )


def _rows_trace(rows: pd.DataFrame, x, y, name: str, marker: dict) -> go.Scatter:
    """Markers for measured rows, each hovering with everything that identifies it."""
    return go.Scatter(
        x=x,
        y=y,
        mode="markers",
        name=name,
        marker=marker,
        text=[hover(r) for r in rows.to_dict("records")],
        hovertemplate="%{text}<extra></extra>",
    )


def _vus_batch_trace(rows: pd.DataFrame, name: str, marker: dict) -> go.Scatter:
    """Measured rows on the contour's log2 (VUs, batch size) plane."""
    x, y = np.log2(rows["vus"].astype(float)), np.log2(rows["batch_size"].astype(float))
    return _rows_trace(rows, x, y, name, marker)


def _log_ticks(values) -> tuple[list[float], list[str]]:
    vals = sorted({float(v) for v in values if pd.notna(v) and v > 0})
    return [float(np.log2(v)) for v in vals], [f"{v:g}" for v in vals]


def _padded(v: list[float]) -> list[float]:
    """An axis range with room for markers drawn on its ends (log2 units)."""
    return [min(v) - 0.2, max(v) + 0.2]


def _wide(values, factor: float = 8.0) -> bool:
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    v = v[v > 0]
    return len(v) > 1 and v.max() / v.min() > factor


def cost_vs_latency(df: pd.DataFrame, metric: str, limit_ms: float | None, title: str) -> go.Figure:
    """Cost vs throughput: symbol = hardware, colour = batch size, Pareto front, global min."""
    col = views.LATENCY_COLUMNS[metric]
    pts = views._valid(df, col, views.COST)
    fig = go.Figure()
    batches = pts["batch_size"].dropna()
    ticks = _log_ticks(batches)
    lo, hi = (min(ticks[0]), max(ticks[0])) if ticks[0] else (0, 1)
    groups = list(pts.groupby(["hw_type", "synthetic"], sort=True))
    hw_order = list(dict.fromkeys(k[0] for k, _ in groups))
    for (hw, synth), g in groups:
        name = hw + (f" · {synth}" if synth else "")
        marker = dict(
            symbol=SYMBOLS[hw_order.index(hw) % len(SYMBOLS)],
            size=11,
            opacity=0.85,
            color=np.log2(g["batch_size"].astype(float)),
            coloraxis="coloraxis",
            line=dict(width=1, color="#333"),
        )
        fig.add_trace(_rows_trace(g, g[col], g[views.COST], name, marker))
    front = views.pareto_front(pts, col)
    fig.add_trace(
        go.Scatter(
            x=front[col],
            y=front[views.COST],
            mode="lines+markers",
            name="Pareto front",
            line=dict(color="red", width=2, dash="dash"),
            marker=dict(size=5, color="red"),
            hoverinfo="skip",
        )
    )
    if not pts.empty:
        m = pts.loc[[pts[views.COST].idxmin()]]
        fig.add_trace(_rows_trace(m, m[col], m[views.COST], "global minimum", STAR))
    _floor_lines(fig, pts, [pts[col].min(), pts[col].max()] if not pts.empty else [0, 1])
    if limit_ms is not None and not pts.empty:
        costs = list(pts[views.COST]) + list(pts["floor_1B_cost"].dropna())
        fig.add_trace(
            go.Scatter(
                x=[limit_ms, limit_ms],
                y=[min(costs), max(costs)],
                mode="lines",
                name=f"your limit: {metric} ≤ {limit_ms:g} ms",
                line=dict(color="#333", width=1.5, dash="dot"),
                hoverinfo="skip",
            )
        )
    fig.update_layout(
        coloraxis=dict(
            colorscale="Viridis",
            cmin=lo,
            cmax=hi if hi > lo else lo + 1,
            colorbar=dict(title="batch<br>size", tickvals=ticks[0], ticktext=ticks[1], len=0.8),
        )
    )
    costs = list(pts[views.COST]) + list(pts["floor_1B_cost"].dropna())
    fig.update_yaxes(title=COST_TITLE, type="log" if _wide(costs) else "linear")
    log_x = _wide(pts[col], 10)
    fig.update_xaxes(
        title=f"{metric} latency (ms)",
        type="log" if log_x else "linear",
        dtick="D2" if log_x else None,
    )
    return _layout(fig, title, "Pareto front (red dashes) and global minimum (star)", 520)


def _floor_lines(fig: go.Figure, pts: pd.DataFrame, xr: list[float]) -> None:
    """The roofline floor per hardware, drawn as a horizontal line across the chart."""
    for hw, g in pts.groupby("hw_type"):
        floors = g["floor_1B_cost"].dropna()
        if floors.empty:
            continue
        f = float(floors.median())
        fig.add_trace(
            go.Scatter(
                x=xr,
                y=[f, f],
                mode="lines",
                name=f"roofline floor · {hw} (median {money(f)})",
                line=dict(color="#888", width=1.5, dash="dot"),
                hovertemplate=(
                    f"roofline floor for {hw}: {money(f)} per 1B inputs"
                    f" (median of {len(floors)} rows, range {money(floors.min())}"
                    f" to {money(floors.max())})<extra></extra>"
                ),
            )
        )


def contour(g: pd.DataFrame, title: str):
    """Cost over VUs x batch as a contour: measured points, min per batch, global min."""
    grid = views.contour_grid(g)
    if grid is None:
        return None
    gx, gy, z = grid
    fig = go.Figure()
    zf = z[np.isfinite(z)]
    fig.add_trace(
        go.Contour(
            x=np.log2(gx),
            y=np.log2(gy),
            z=z,
            colorscale="Viridis_r",
            ncontours=18,
            contours=dict(showlabels=True, labelfont=dict(size=10, color="white")),
            colorbar=dict(title=COST_TITLE, tickprefix="$"),
            zmin=float(zf.min()),
            zmax=float(zf.max()),
            opacity=0.85,
            hovertemplate="VUs ≈ %{customdata[0]:.1f}<br>batch ≈ %{customdata[1]:.1f}"
            "<br>interpolated $%{z:,.2f} per 1B<extra></extra>",
            customdata=np.dstack(np.meshgrid(gx, gy)),
        )
    )
    pts = views._valid(g, "vus", "batch_size", views.COST)
    outline = dict(width=1, color="black")
    fig.add_trace(_vus_batch_trace(pts, "measured", dict(size=7, color="white", line=outline)))
    per_batch = pts.loc[pts.groupby("batch_size")[views.COST].idxmin()]
    cheapest = dict(size=9, color="red", line=outline)
    fig.add_trace(_vus_batch_trace(per_batch, "cheapest per batch size", cheapest))
    m = pts.loc[[pts[views.COST].idxmin()]]
    fig.add_trace(
        go.Scatter(
            x=np.log2(m["vus"].astype(float)),
            y=np.log2(m["batch_size"].astype(float)),
            mode="markers+text",
            name="global minimum",
            marker=STAR,
            text=[money(v) for v in m[views.COST]],
            textposition="top center",
            textfont=dict(color="black", size=12),
            hoverinfo="skip",
        )
    )
    xt, yt = _log_ticks(pts["vus"]), _log_ticks(pts["batch_size"])
    fig.update_xaxes(
        title="VUs (concurrent requests)", tickvals=xt[0], ticktext=xt[1], range=_padded(xt[0])
    )
    fig.update_yaxes(title="batch size", tickvals=yt[0], ticktext=yt[1], range=_padded(yt[0]))
    return _layout(fig, title, "interpolated between measured points (white); red = cheapest")


def vus_lines(df: pd.DataFrame, groups: pd.DataFrame):
    """Throughput against VUs per series; series still rising at their largest VUs in red."""
    if groups.empty:
        return None
    fig = go.Figure()
    rows = views._valid(df, "vus", views.THROUGHPUT)
    ticks = _log_ticks(rows["vus"])
    for _, s in groups.iterrows():
        sel = np.ones(len(rows), dtype=bool)
        for c in views.SERIES:
            v = s[c]
            sel &= (rows[c].isna() & pd.isna(v)).to_numpy() | (rows[c] == v).to_numpy()
        per = rows[sel].groupby("vus")[views.THROUGHPUT].median().sort_index()
        where = Path(str(s["source_file"])).parent.name or str(s["source_file"])
        name = (
            f"{where}: {s['task']} · {s['hw_type']} · {s['image']} · b{num(s['batch_size'], 0)}"
            + s["label"]
        )
        rising = bool(s["still_rising"])
        fig.add_trace(
            go.Scatter(
                x=np.log2(per.index.to_numpy(float)),
                y=per.to_numpy(),
                mode="lines+markers",
                name=("⚠ still rising: " if rising else "") + name,
                line=dict(color="red" if rising else "#9aa", width=3 if rising else 1.5),
                marker=dict(size=7),
                customdata=per.index.to_numpy(),
                hovertemplate=name + "<br>%{customdata} VUs: %{y:,.1f} inputs/s<extra></extra>",
            )
        )
    fig.update_xaxes(title="VUs (concurrent requests)", tickvals=ticks[0], ticktext=ticks[1])
    fig.update_yaxes(title="throughput (inputs/s, median of repeats)", rangemode="tozero")
    n = int(groups["still_rising"].sum())
    return _layout(
        fig,
        "Did we try enough VUs?",
        f"{n} of {len(groups)} series still rising at their largest VU count (red)",
        height=460 + 18 * len(groups),
    )


def hardware(hw: pd.DataFrame):
    """Best $/1B per task x hardware as bars, the roofline floor as a marked line on each."""
    if hw.empty:
        return None
    fig = go.Figure()
    x = [f"{r.task}<br>{r.hw_type}" for r in hw.itertuples()]
    fig.add_trace(
        go.Bar(
            x=x,
            y=hw["best_1B_cost"],
            name="best measured $/1B",
            marker_color="#4c78a8",
            text=[money(v) for v in hw["best_1B_cost"]],
            textposition="inside",
            insidetextanchor="middle",
            textfont=dict(color="white"),
            customdata=np.stack([hw["image"] + hw["label"], hw["throughput"]], axis=-1),
            hovertemplate="%{x}<br>best %{text} per 1B inputs<br>%{customdata[0]}"
            "<br>%{customdata[1]:,.1f} inputs/s<extra></extra>",
        )
    )
    has_floor = hw["floor_1B_cost"].notna()
    if has_floor.any():
        fig.add_trace(
            go.Scatter(
                x=[xi for xi, ok in zip(x, has_floor, strict=True) if ok],
                y=hw.loc[has_floor, "floor_1B_cost"],
                mode="markers",
                name="roofline floor",
                marker=dict(symbol="line-ew", size=60, line=dict(width=3, color="#d62728")),
                customdata=hw.loc[has_floor, "cost_over_floor"],
                hovertemplate="%{x}<br>roofline floor $%{y:,.2f} per 1B"
                "<br>best run costs %{customdata:.2f}× the floor<extra></extra>",
            )
        )
    vals = list(hw["best_1B_cost"]) + list(hw["floor_1B_cost"].dropna())
    log = _wide(vals, 20)
    fig.update_yaxes(title=COST_TITLE, type="log" if log else "linear", rangemode="tozero")
    if not log:
        fig.update_yaxes(range=[0, max(vals) * 1.18])
    fig.update_xaxes(title="task · hardware")
    return _layout(fig, "Hardware comparison", "best $/1B per task and hardware; red = floor")


def energy(rows: pd.DataFrame):
    """Joules per input per measured configuration, coloured by hardware; hover gives kWh/1B."""
    rows = rows[rows["energy_j_per_input"].notna()]
    if rows.empty:
        return None
    fig = go.Figure()
    y = [
        f"{r['task']} · {r['image']}{r['label']} · {r['mode']} · b{num(r['batch_size'], 0)} · "
        f"{r['concurrency']}"
        for r in rows.to_dict("records")
    ]
    for hw, idx in rows.groupby("hw_type").groups.items():
        pos = [rows.index.get_loc(i) for i in idx]
        g = rows.loc[idx]
        fig.add_trace(
            go.Bar(
                y=[y[i] for i in pos],
                x=g["energy_j_per_input"],
                orientation="h",
                name=str(hw),
                customdata=np.stack([g["kwh_per_1B"], g["energy_source"].astype(str)], axis=-1),
                hovertemplate="%{y}<br>%{x:.4g} J per input · %{customdata[0]:,.1f} kWh per 1B"
                "<br>%{customdata[1]}<extra></extra>",
            )
        )
    fig.update_xaxes(title="joules per input", rangemode="tozero")
    fig.update_yaxes(autorange="reversed", automargin=True)
    return _layout(fig, "Energy per input", "from the device's counter", 160 + 40 * len(rows))


def savings(s: pd.DataFrame):
    if s.empty:
        return None
    y = [
        f"{r.task} · {r.hw_type} · b{num(r.batch_size, 0)} · {r.concurrency}:<br>"
        f"{r.cheaper} vs {r.than}"
        for r in s.itertuples()
    ]
    fig = go.Figure(
        go.Bar(
            y=y,
            x=s["savings_pct"],
            orientation="h",
            marker_color="#54a24b",
            text=[f"{v:.1f} %" for v in s["savings_pct"]],
            textposition="outside",
            hovertemplate="%{y}<br>%{x:.1f} % cheaper<extra></extra>",
        )
    )
    fig.update_xaxes(
        title="cost saving of the cheaper image (%)",
        range=[0, max(s["savings_pct"].max(), 1) * 1.15],
    )
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_layout(showlegend=False)
    return _layout(fig, "Engine savings", "same hardware, batch and concurrency", 160 + 48 * len(s))


def vectors(df: pd.DataFrame):
    cols = ["min_num_vectors", "avg_num_vectors", "max_num_vectors"]
    values = df[cols].stack().dropna()
    if values.nunique() < 2:  # one value everywhere: the table says it, a histogram would not
        return None
    fig = go.Figure()
    for c, colour in zip(cols, ["#d62728", "#4c78a8", "#54a24b"], strict=True):
        fig.add_trace(go.Histogram(x=df[c].dropna(), name=c, opacity=0.6, marker_color=colour))
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="vectors per input")
    fig.update_yaxes(title="runs")
    return _layout(fig, "Vector counts", "min / avg / max vectors per input, per run", 380)


def accuracy(df: pd.DataFrame):
    acc = df["accuracy"].dropna()
    if acc.empty:
        return None
    fig = go.Figure(go.Histogram(x=acc, marker_color="#4c78a8", nbinsx=30))
    fig.update_xaxes(title="accuracy (fraction of labels matched)")
    fig.update_yaxes(title="runs")
    return _layout(fig, "Accuracy across configurations", "one count per run", 380)


PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#9467bd"]


def _plan_hover(r: dict) -> str:
    what = (
        "published: " + r["source"]
        if r["published"]
        else f"{r['source_file']} row {r['source_row']}"
    )
    return "<br>".join(
        [
            f"<b>{money(r['monthly_cost'])}/month</b> · {r['instances']:,} × {r['hw_type']}"
            + (" · <b>chosen</b>" if r["chosen"] else ""),
            f"{r['task']} · {r['model_name']} · {r['image']}{r['label']}",
            f"batch {num(r['batch_size'], 0)} · {r['concurrency']} · {r['boundary']}",
            f"{num(r['throughput'])} inputs/s per instance · {r['latency_column']} "
            f"{ms(r['latency_ms'])} ms",
            f"effective {money(r['effective_cost_per_1b'])} per 1B · {r['price_source']}",
            what[:160],
        ]
    )


def plan_chart(scan: pd.DataFrame, task: str, demand) -> go.Figure | None:
    """$/month against latency for every candidate point of a task, per hardware, as if it
    were the deployment point; the chosen ones large, published ones hollow, the limit drawn."""
    pts = scan[(scan["task"] == task)] if not scan.empty else scan
    if pts.empty:
        return None
    drawn = pts[pts["latency_ms"].notna()]
    hidden = int(pts["latency_ms"].isna().sum())
    fig = go.Figure()
    order = [*PROFILES, *sorted(set(pts["hw_type"]) - set(PROFILES))]  # one colour per hardware
    for (hw, pub, chosen), g in drawn.groupby(["hw_type", "published", "chosen"], sort=True):
        i = order.index(hw)
        symbol = SYMBOLS[i % len(SYMBOLS)] + ("-open" if pub else "")
        name = f"{hw}{' · published' if pub else ''}{' · chosen' if chosen else ''}"
        marker = dict(
            symbol=symbol,
            size=17 if chosen else 9,
            color=PALETTE[i % len(PALETTE)],
            opacity=1.0 if chosen else 0.6,
            line=dict(
                width=2 if chosen else 1, color="#111" if chosen else PALETTE[i % len(PALETTE)]
            ),
        )
        fig.add_trace(
            go.Scatter(
                x=g["latency_ms"],
                y=g["monthly_cost"],
                mode="markers",
                name=name,
                marker=marker,
                text=[_plan_hover(r) for r in g.to_dict("records")],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    ys = list(drawn["monthly_cost"]) or [1.0]
    fig.add_trace(
        go.Scatter(
            x=[demand.limit_ms, demand.limit_ms],
            y=[min(ys) / 1.5, max(ys) * 1.5],
            mode="lines",
            name=f"limit: {demand.metric} ≤ {demand.limit_ms:g} ms",
            line=dict(color="#d62728", width=2, dash="dash"),
            hoverinfo="skip",
        )
    )
    fig.update_xaxes(title=f"{demand.metric} latency (ms) of the point", type="log")
    fig.update_yaxes(title="$ per month at this load", type="log")
    sub = "filled = measured here, hollow = published, large = chosen"
    if hidden:
        sub += f"; {hidden} published without a latency: not drawn"
    return _layout(fig, f"{task}: $/month vs {demand.metric} latency per hardware", sub, 540)
