"""Sanity checks over a results table (no failed requests, no invalid outputs, the expected
size, enough VUs tried, stable accuracy), printed after every sweep and stored with it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

SWEEP_GROUP = ["hw_type", "engine", "batch_size", "inputs_per_request"]


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(df[col], errors="coerce") if col in df else pd.Series(dtype=float)


def failed_requests(df: pd.DataFrame) -> Check:
    failed = int(_num(df, "failed_requests").fillna(0).sum())
    total = int(_num(df, "total_requests").fillna(0).sum())
    bad = df[_num(df, "failed_requests").fillna(0) > 0]
    where = ", ".join(f"{r.engine}/b{r.batch_size}/vus{r.vus}" for r in bad.head(5).itertuples())
    return Check(
        "failed requests = 0",
        failed == 0,
        f"{failed} of {total} requests failed" + (f" ({where})" if where else ""),
    )


def invalid_outputs(df: pd.DataFrame) -> Check:
    invalid = int(_num(df, "invalid_embeddings").fillna(0).sum())
    return Check(
        "invalid outputs = 0",
        invalid == 0,
        f"{invalid} responses had NaN/Inf, wrong size, non-unit norm or unknown labels",
    )


def embedding_size(df: pd.DataFrame) -> Check:
    emb = df[df.get("task", pd.Series(dtype=str)).astype(str).str.contains("embedding")]
    if emb.empty:
        return Check("expected embedding size", True, "no embedding rows")
    bad = int(_num(emb, "invalid_embeddings").fillna(0).sum())
    return Check(
        "expected embedding size",
        bad == 0,
        "every response was checked against the model's dimension"
        + (f"; {bad} were not" if bad else ""),
    )


def vector_counts(df: pd.DataFrame) -> Check:
    if "avg_num_vectors" not in df or _num(df, "avg_num_vectors").dropna().empty:
        return Check("vector counts", True, "no vector outputs")
    # classification rows have no vectors (NaN): only rows with vector outputs are checked
    known = _num(df, "avg_num_vectors").notna()
    lo, avg, hi = (
        _num(df, c)[known] for c in ("min_num_vectors", "avg_num_vectors", "max_num_vectors")
    )
    ok = bool((lo <= avg).all() and (avg <= hi).all() and (lo >= 1).all())
    return Check(
        "vector counts",
        ok,
        f"min {lo.min():g} / avg {avg.mean():.2f} / max {hi.max():g} vectors per input",
    )


def accuracy_stable(df: pd.DataFrame, tolerance: float = 0.05) -> Check:
    acc = _num(df, "accuracy").to_numpy(dtype=float)
    known = ~pd.isna(acc)
    if not known.any():
        return Check("accuracy stable", True, "no labelled data")
    med = float(pd.Series(acc[known]).median())
    off = known & (abs(acc - med) > tolerance)
    detail = f"median {med:.3f}, range {acc[known].min():.3f}-{acc[known].max():.3f}"
    if off.any():
        detail += "; outliers: " + ", ".join(
            f"{r['engine']}/b{r['batch_size']}/vus{r['vus']}={r['accuracy']:.3f}"
            for r in df[off].head(5).to_dict("records")
        )
    return Check("accuracy stable across configurations", not off.any(), detail)


def enough_vus(df: pd.DataFrame, min_gain: float = 0.02) -> tuple[Check, pd.DataFrame]:
    """Flag groups whose throughput still rises monotonically at the largest VU count tried.

    Repeats are summarised by their median, and the last step must gain more than
    max(`min_gain`, the spread of repeated runs) to count as rising: the sweep's own rule.
    """
    cols = [c for c in SWEEP_GROUP if c in df]
    flagged = []
    if "vus" in df and not df.empty:
        for key, g in df.groupby(cols, dropna=False):
            g = g.assign(vus=_num(g, "vus"), thr=_num(g, "throughput_req_per_sec"))
            per = g.groupby("vus")["thr"].agg(["median", "min", "max"]).sort_index()
            if len(per) < 2:
                continue
            spread = ((per["max"] - per["min"]) / per["median"].where(per["median"] > 0)).max()
            margin = max(min_gain, 0.0 if pd.isna(spread) else float(spread))
            gain = per["median"].iloc[-1] / per["median"].iloc[-2] - 1
            if per["median"].is_monotonic_increasing and gain > margin:
                names = key if isinstance(key, tuple) else (key,)
                flagged.append(dict(zip(cols, names, strict=True), max_vus=int(per.index[-1])))
    table = pd.DataFrame(flagged)
    detail = (
        "every group peaked (within noise) before its largest VU count"
        if table.empty
        else "throughput still rising at the largest VUs tried: "
        + "; ".join(f"{r['engine']}/b{r['batch_size']} at {r['max_vus']} VUs" for r in flagged[:5])
    )
    return Check("did we try enough VUs?", table.empty, detail), table


def run_all(df: pd.DataFrame) -> list[Check]:
    return [
        failed_requests(df),
        invalid_outputs(df),
        embedding_size(df),
        vector_counts(df),
        accuracy_stable(df),
        enough_vus(df)[0],
    ]


def save(checks: list[Check], path: str | Path) -> None:
    Path(path).write_text(json.dumps([asdict(c) for c in checks], indent=2))


def print_checks(console, checks: list[Check]) -> None:
    for c in checks:
        mark = "[green]PASS[/]" if c.passed else "[red]FAIL[/]"
        console.print(f"{mark} {c.name}: {c.detail}", highlight=False)
