"""The decisions a report shows, as plain DataFrames (rendering lives in render.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import checks
from harness.results import quality_failed

LATENCY_COLUMNS = {"p95": "p95_latency_ms", "p99": "p99_latency_ms", "avg": "avg_latency_ms"}
COST = "1B_cost"
THROUGHPUT = "throughput_req_per_sec"
# one sweep's rows: the monotonic-VU check never mixes runs from different files or hosts
SERIES = [
    "source_file",
    "task",
    "model_name",
    "hw_type",
    "host_name",
    "mode",
    "engine",
    "image",
    "batch_size",
    "inputs_per_request",
]


def _valid(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    ok = np.ones(len(df), dtype=bool)
    for c in cols:
        if c not in df:  # an empty selection has no columns: nothing in it is valid
            return pd.DataFrame(columns=list(dict.fromkeys([*df.columns, *cols])))
        ok &= np.isfinite(pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float))
    return df[ok]


def _right_answers(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows whose answers were not found under the quality gate: only these can be best."""
    if "quality_passed" not in rows:
        return rows
    return rows[~rows.apply(quality_failed, axis=1)]


def pareto_front(df: pd.DataFrame, x: str, y: str = COST) -> pd.DataFrame:
    """Rows no other row beats on both x and y (lower is better on each), sorted by x; a row
    failing the quality gate is on no front (its speed bought wrong answers)."""
    pts = _valid(_right_answers(df), x, y).sort_values([x, y], kind="mergesort")
    keep, best = [], np.inf
    for idx, v in zip(pts.index, pts[y], strict=True):
        if v < best:
            keep.append(idx)
            best = v
    return pts.loc[keep]


def best_configs(df: pd.DataFrame, metric: str = "p95", limit_ms: float | None = None):
    """Cheapest row per task x hardware, optionally among rows with latency <= limit_ms."""
    col = LATENCY_COLUMNS[metric]
    rows = _right_answers(_valid(df, COST))
    if limit_ms is not None:
        lat = pd.to_numeric(rows[col], errors="coerce")
        rows = rows[lat <= limit_ms]
    if rows.empty:
        return rows
    idx = rows.groupby(["task", "hw_type"])[COST].idxmin()
    return rows.loc[idx.to_numpy()].sort_values(["task", COST])


def vu_groups(df: pd.DataFrame, min_gain: float = 0.02) -> pd.DataFrame:
    """Each series tried at >= 2 VU counts: is throughput still rising at the largest one?

    The same rule as the sweep and `analysis.checks`: repeats are summarised by their median,
    and the last step must gain more than max(min_gain, spread of repeats) to count.
    """
    out = []
    rows = _valid(df, "vus", THROUGHPUT)
    for key, g in rows.groupby(SERIES, dropna=False):
        per = g.groupby("vus")[THROUGHPUT].agg(["median", "min", "max"]).sort_index()
        if len(per) < 2:
            continue
        spread = ((per["max"] - per["min"]) / per["median"].where(per["median"] > 0)).max()
        margin = max(min_gain, 0.0 if pd.isna(spread) else float(spread))
        gain = per["median"].iloc[-1] / per["median"].iloc[-2] - 1
        rising = bool(per["median"].is_monotonic_increasing and gain > margin)
        out.append(
            {
                **dict(zip(SERIES, key, strict=True)),
                "vus_tried": ", ".join(str(int(v)) for v in per.index),
                "max_vus": int(per.index[-1]),
                "throughput_at_max": float(per["median"].iloc[-1]),
                "last_gain": float(gain),
                "margin": margin,
                "still_rising": rising,
                "label": _labels(g),
            }
        )
    cols = [*SERIES, "vus_tried", "max_vus", "throughput_at_max", "last_gain", "margin"]
    return pd.DataFrame(out, columns=[*cols, "still_rising", "label"])


def _labels(g: pd.DataFrame) -> str:
    """Every synthetic label among a group's rows, e.g. ' [random weights]'."""
    found = sorted({s for s in g["synthetic"] if s})
    return f" [{', '.join(found)}]" if found else ""


SAVINGS_GROUP = [
    "task",
    "model_name",
    "hw_type",
    "mode",
    "batch_size",
    "inputs_per_request",
    "vus",
    "n_models",
    "workers_per_model",
]


def engine_savings(df: pd.DataFrame) -> pd.DataFrame:
    """Same hardware, batch and concurrency, different engine/image: cheapest vs each other.

    Each image is represented by its cheapest run there; repeats are not averaged.
    """
    out = []
    rows = _valid(df, COST)
    for key, g in rows.groupby(SAVINGS_GROUP, dropna=False):
        best_per_image = g.loc[g.groupby("image")[COST].idxmin()].sort_values(COST)
        if len(best_per_image) < 2:
            continue
        win = best_per_image.iloc[0]
        for _, other in best_per_image.iloc[1:].iterrows():
            out.append(
                {
                    **dict(zip(SAVINGS_GROUP, key, strict=True)),
                    "concurrency": win["concurrency"],
                    "cheaper": win["image"] + win["label"],
                    "cheaper_cost": win[COST],
                    "than": other["image"] + other["label"],
                    "than_cost": other[COST],
                    "savings_pct": 100.0 * (1 - win[COST] / other[COST]),
                }
            )
    return pd.DataFrame(out)


def hardware_comparison(df: pd.DataFrame) -> pd.DataFrame:
    """Per task x hardware: the best row's $/1B, throughput, p99 and its distance to the floor."""
    best = best_configs(df)
    out = []
    for _, r in best.iterrows():
        same = df[(df["task"] == r["task"]) & (df["hw_type"] == r["hw_type"])]
        floor = r["floor_1B_cost"]
        out.append(
            {
                "task": r["task"],
                "hw_type": r["hw_type"],
                "devices": ", ".join(sorted({str(d) for d in same["device_name"].dropna()})) or "-",
                "hosts": ", ".join(sorted(set(same["host_name"]))),
                "runs": len(same),
                "best_1B_cost": r[COST],
                "throughput": r[THROUGHPUT],
                "p99_latency_ms": r["p99_latency_ms"],
                "floor_1B_cost": floor,
                # the "efficiency against the floor": how many times the floor we pay
                "cost_over_floor": r[COST] / floor if pd.notna(floor) and floor > 0 else np.nan,
                "efficiency": floor / r[COST] if pd.notna(floor) and r[COST] > 0 else np.nan,
                "image": r["image"],
                "label": r["label"],
            }
        )
    return pd.DataFrame(out, columns=HARDWARE_COLUMNS)


#: hardware_comparison's columns (kept when no row has a cost, so the report still renders)
HARDWARE_COLUMNS = [
    "task",
    "hw_type",
    "devices",
    "hosts",
    "runs",
    "best_1B_cost",
    "throughput",
    "p99_latency_ms",
    "floor_1B_cost",
    "cost_over_floor",
    "efficiency",
    "image",
    "label",
]
ENERGY = "energy_j_per_input"


def energy_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose device had a readable meter (joules, or a relative reading), lowest J first."""
    src = df["energy_source"].astype(object)
    has = df[ENERGY].notna() | (src.notna() & (src.astype(str).str.len() > 0))
    return df[has].sort_values(["task", ENERGY, COST], na_position="last")


def neuronperf_table(df: pd.DataFrame) -> pd.DataFrame:
    """In-process rows in neuronperf's layout: copies x workers x batch, forward latency."""
    rows = df[df["mode"] == "inprocess"]
    return rows.sort_values(["task", "hw_type", "image", "batch_size", "n_models"])


def contour_grid(points: pd.DataFrame, n: int = 60, power: float = 2.0):
    """Cost over (VUs, batch) on an n x n grid in log2 space, by inverse-distance weighting.

    Exact at measured points (the cheapest run where several share one); None when the points
    do not span two VU counts and two batch sizes.
    """
    pts = _valid(points, "vus", "batch_size", COST)
    pts = pts.groupby(["vus", "batch_size"], as_index=False)[COST].min()
    if pts["vus"].nunique() < 2 or pts["batch_size"].nunique() < 2:
        return None
    px, py = np.log2(pts["vus"].to_numpy(float)), np.log2(pts["batch_size"].to_numpy(float))
    z = pts[COST].to_numpy(float)
    gx = np.linspace(px.min(), px.max(), n)
    gy = np.linspace(py.min(), py.max(), n)
    xx, yy = np.meshgrid(gx, gy)
    # axes are scaled to the unit square so neither dominates the distance
    sx, sy = max(np.ptp(px), 1e-9), max(np.ptp(py), 1e-9)
    d2 = ((xx[..., None] - px) / sx) ** 2 + ((yy[..., None] - py) / sy) ** 2
    w = 1.0 / np.maximum(d2, 1e-12) ** (power / 2)
    grid = (w * z).sum(-1) / w.sum(-1)
    exact = d2.min(-1) < 1e-12
    grid[exact] = z[d2.argmin(-1)][exact]
    return 2**gx, 2**gy, grid


def sanity(df: pd.DataFrame) -> list[checks.Check]:
    """The sanity checks the sweep prints (failed requests, invalid outputs, sizes, VUs tried,
    accuracy), over the report's rows."""
    return checks.run_all(df)
