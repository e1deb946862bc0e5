"""The decision layer (DESIGN.md): result rows in, a deployment plan out.

For a load (a mean rate, a peak factor), a latency limit, a headroom and a price basis: per
workload (task × model) and per hardware × engine × precision × measurement boundary, the
measured point that meets the limit with the most throughput per instance; whole instances at
peak; $/month; the effective $/1B at the mean rate; the distance to the roofline floor; and the
artifact to deploy. Nothing is extrapolated: a plan uses only a throughput that was measured
(or, for reference rows, published) at the latency it reports.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import buy as buying
from core import stats
from core.errors import BillionbenchError
from harness.hardware import PRICE_BASES, PROFILES, Price
from harness.results import quality_failed

#: a month is 730 hours (365 days × 24 h / 12), the convention of cloud monthly prices
HOURS_PER_MONTH = 730.0
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600.0
_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "week": 7 * 86400.0,
    "month": SECONDS_PER_MONTH,
    "mo": SECONDS_PER_MONTH,
}
#: the latency a limit applies to: the end-to-end percentile, else the forward-only one
#: (neuronperf-style tables publish only latency_ms_p99)
LATENCY = {
    "p99": ("p99_latency_ms", "latency_ms_p99"),
    "p95": ("p95_latency_ms", "latency_ms_p95"),
}
WORKLOAD = ["task", "model_name"]
GROUP = ["hw_type", "engine", "precision", "mode"]
BOUNDARY = {"inprocess": "in-process", "http": "over HTTP"}
NO_ARTIFACT = "in-memory model (no artifact)"


class PlanError(BillionbenchError):
    """The plan cannot be answered from these rows; the message says why and what to do."""


def parse_rate(text: str) -> float:
    """Inputs per second from '11574', '11574/s', '1e9/day', '3e10/month' (a month = 730 h)."""
    raw = str(text).strip().replace(",", "").replace("_", "")
    m = re.fullmatch(r"([0-9.eE+-]+)\s*(?:/\s*([a-zA-Z]+))?", raw)
    unit = (m.group(2) or "s").lower() if m else ""
    unit = unit[:-1] if unit.endswith("s") and unit[:-1] in _UNITS else unit
    try:
        value = float(m.group(1)) if m else math.nan
    except ValueError:
        value = math.nan
    if not m or unit not in _UNITS or not math.isfinite(value) or value <= 0:
        raise PlanError(
            f"--rate {text!r}: expected a number of inputs > 0 per s, min, h, day, week or month "
            "(a month = 730 h), e.g. 1e9/day or 11574/s"
        )
    return value / _UNITS[unit]


@dataclass(frozen=True)
class Demand:
    """What the plan must serve, and how it is priced."""

    rate: float  # mean inputs per second
    limit_ms: float
    metric: str = "p99"
    peak: float = 1.0  # peak-to-mean factor
    headroom: float = 0.2  # share of each instance's measured throughput kept free at peak
    basis: str = "on-demand"
    prices: tuple[tuple[str, float], ...] = ()  # --price HW=X overrides on this basis
    rate_text: str = ""

    def __post_init__(self) -> None:
        checks = (
            (self.rate > 0 and math.isfinite(self.rate), f"--rate must be > 0, got {self.rate}"),
            (self.limit_ms > 0, f"--{self.metric}-ms must be > 0, got {self.limit_ms}"),
            (self.metric in LATENCY, f"latency metric is p99 or p95, got {self.metric!r}"),
            (self.peak >= 1, f"--peak is peak ÷ mean, so >= 1; got {self.peak}"),
            (0 <= self.headroom < 1, f"--headroom is a share in [0, 1); got {self.headroom}"),
            (
                self.basis in PRICE_BASES,
                f"--price-basis must be one of {', '.join(PRICE_BASES)}; got {self.basis!r}",
            ),
        )
        for ok, why in checks:
            if not ok:
                raise PlanError(why)
        for hw, price in self.prices:
            if not price > 0:
                raise PlanError(f"--price {hw}={price}: a price must be > 0 $/hr")

    @property
    def peak_rate(self) -> float:
        return self.rate * self.peak

    def describe(self) -> str:
        rate = f"{self.rate_text} = " if self.rate_text else ""
        return (
            f"{rate}{self.rate:,.1f} inputs/s mean, peak ×{self.peak:g} = {self.peak_rate:,.1f} "
            f"inputs/s; limit {self.metric} ≤ {self.limit_ms:g} ms; headroom "
            f"{self.headroom:.0%} of each instance's measured throughput kept free at peak; "
            f"{self.basis} prices; a month = {HOURS_PER_MONTH:g} h"
        )


# -- the arithmetic, one formula each --------------------------------------------------------


def instances_needed(peak_rate: float, throughput: float, headroom: float) -> int:
    """Whole instances so that at peak each runs at most (1 - headroom) of its throughput."""
    if not throughput > 0:
        raise PlanError(f"a throughput must be > 0 inputs/s to plan on, got {throughput}")
    need = peak_rate / (throughput * (1.0 - headroom))
    return max(1, math.ceil(need - 1e-9))  # 3.0000000001 is 3 instances, not 4


def monthly_cost(instances: int, price_per_hour: float) -> float:
    return instances * price_per_hour * HOURS_PER_MONTH


def effective_cost_per_1b(monthly: float, mean_rate: float) -> float:
    """What a billion inputs costs at the mean rate, idle capacity included."""
    return monthly / (mean_rate * SECONDS_PER_MONTH / 1e9)


# -- screening rows -----------------------------------------------------------------------------


#: the distribution-free 95 % upper bound of each percentile (core.stats), when resolved
BOUND = {"p99": "p99_upper_ms", "p95": "p95_upper_ms"}
#: the columns that name one measured point, whatever its repeat
POINT = [
    "source_file", "task", "model_name", "hw_type", "host_name", "engine", "image", "precision",
    "mode", "protocol", "batch_size", "inputs_per_request", "max_batch_size", "vus", "n_models",
    "workers_per_model", "offered_rate",
]  # fmt: skip


def bound_of(row: pd.Series, metric: str) -> float | None:
    """The row's 95 % upper bound on its `metric` percentile; None when not resolved."""
    return stats.finite(row.get(BOUND[metric]))


def limit_latency(row: pd.Series, metric: str) -> tuple[float | None, str | None]:
    """The latency a limit is checked against: the upper bound where the samples give one,
    else the point estimate (flagged by `sizing_flags`)."""
    bound = bound_of(row, metric)
    if bound is not None:
        return bound, BOUND[metric]
    return latency_of(row, metric)


def throughput_bound(row: pd.Series) -> tuple[float, str]:
    """(throughput to size on, how it was had): the 95 % interval's lower end where there is
    one (t over repeats, or batch means over one run's windows), else the point estimate."""
    thr = float(row["throughput_req_per_sec"])
    low = stats.finite(row.get("throughput_ci_low"))
    method = str(row.get("throughput_ci_method") or "")
    n = row.get("repeats_n") if method == "t(repeats)" else row.get("throughput_windows")
    what = "repeats" if method == "t(repeats)" else "1-s windows"
    if low is not None and 0 < low <= thr:
        return low, f"95 % lower bound ({method}, {_count(n)} {what})"
    slowest = stats.finite(row.get("throughput_min"))
    if low is not None and slowest is not None and slowest > 0:  # the interval reaches 0
        return slowest, f"slowest of {_count(n)} {what} (the 95 % interval reaches 0)"
    return thr, "point estimate (no interval: measure with --repeats 2 or longer)"


def _count(n: Any) -> str:
    v = stats.finite(n)
    return "?" if v is None else f"{int(v):,}"


def sizing_flags(row: pd.Series, metric: str) -> list[str]:
    """What makes a row's plan less sure: an unresolved percentile, a busy host."""
    flags = []
    if not is_published(row) and bound_of(row, metric) is None:
        n = stats.finite(row.get("n_samples"))
        need = stats.finite(row.get("p99_samples_needed")) or 299
        got = f"{int(n):,} samples" if n is not None else "samples not recorded"
        flags.append(f"{metric} not resolved ({got}; a 95 % bound needs {int(need):,}+)")
    low = stats.finite(row.get("throughput_ci_low"))
    if low is not None and low <= 0:
        flags.append(
            f"throughput interval reaches 0 ({low:,.1f}–{stats.finite(row.get('throughput_ci_high')) or 0:,.1f}"
            "): too noisy to size on its bound; measure more repeats or longer"
        )
    disturbed = row.get("disturbed")
    if isinstance(disturbed, (bool, np.bool_)) and bool(disturbed):
        flags.append(f"disturbed: {_text(row.get('disturbed_reason'), 'busy host')}")
    return flags


def collapse_repeats(df: pd.DataFrame) -> pd.DataFrame:
    """One row per measured point: its repeats' mean throughput with the t-interval across them
    (`throughput_ci_method` t(repeats)), the worst p99 and p99 bound, disturbed if any was."""
    if "repeat" not in df or df.empty:
        return df
    keys = [c for c in POINT if c in df]
    out = []
    for _, g in df.groupby(keys, dropna=False, sort=False):
        first = g.iloc[0].copy()
        if len(g) > 1:
            thr = pd.to_numeric(g["throughput_req_per_sec"], errors="coerce")
            ci = stats.t_interval(thr)
            first["throughput_req_per_sec"] = ci.mean
            first["throughput_ci_low"], first["throughput_ci_high"] = ci.low, ci.high
            first["throughput_ci_method"] = ci.method
            first["repeats_n"] = ci.n
            first["throughput_min"] = float(thr.min())
            for col in ("p99_latency_ms", "p95_latency_ms", "latency_ms_p99", "latency_ms_p95"):
                if col in g:
                    first[col] = pd.to_numeric(g[col], errors="coerce").max()
            for col in BOUND.values():
                if col in g:
                    v = pd.to_numeric(g[col], errors="coerce")
                    first[col] = v.max() if v.notna().all() else math.nan
            if "disturbed" in g:
                hit = g["disturbed"].astype(object).eq(True)
                first["disturbed"] = bool(hit.any())
                if hit.any() and "disturbed_reason" in g:
                    why = g.loc[hit, "disturbed_reason"].dropna()
                    first["disturbed_reason"] = (
                        f"{int(hit.sum())} of {len(g)} repeats: {why.iloc[0]}" if len(why) else None
                    )
        out.append(first)
    return pd.DataFrame(out)


def latency_of(row: pd.Series, metric: str) -> tuple[float | None, str | None]:
    """(value, column) of a row's latency for a limit on `metric`; (None, None) if absent."""
    for col in LATENCY[metric]:
        v = row.get(col)
        if v is not None and pd.notna(v):
            return float(v), col
    return None, None


def is_published(row: pd.Series) -> bool:
    """A reference row (analysis.references), never a measurement."""
    v = row.get("published")
    return isinstance(v, (bool, np.bool_)) and bool(v)


def boundary_of(row: pd.Series) -> str:
    b = row.get("measurement_boundary")
    if isinstance(b, str) and b:
        return b
    return BOUNDARY.get(str(row.get("mode")), str(row.get("mode")))


def exclusion(row: pd.Series, metric: str) -> str | None:
    """Why a row can never be a plan (None: it is a candidate)."""
    err = row.get("error")
    if isinstance(err, str) and err.strip():
        return "recorded as failed (error set)"
    if pd.notna(row.get("failed_requests")) and row["failed_requests"] > 0:
        return "failed requests > 0"
    synth = row.get("synthetic") or ""
    if synth and synth != "random weights":
        return f"computes no model ({synth})"
    thr = row.get("throughput_req_per_sec")
    if thr is None or pd.isna(thr) or thr <= 0:
        return "no throughput recorded"
    if latency_of(row, metric)[0] is None:
        return f"no {metric} latency recorded"
    if parity_verdict(row).startswith("FAILED"):
        return "parity FAILED (never ranked)"
    if quality_failed(row):
        return "answers under the quality gate (never ranked)"
    return None


def _config(row: pd.Series) -> dict[str, Any]:
    try:
        cfg = json.loads(row.get("config_json"))
    except (TypeError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _engine_config(row: pd.Series) -> dict[str, Any]:
    return _config(row).get("engine") or {}


def artifact_of(row: pd.Series) -> dict[str, Any]:
    """The artifact a row ran: its path and, when its manifest.json is readable here, what the
    manifest says (format, precision, parity, whether this machine's key seals it)."""
    if is_published(row):
        return {"path": None, "describe": "published figure (no artifact)"}
    path = _engine_config(row).get("artifact")
    if not path:
        metric = row.get("parity_metric")
        if isinstance(metric, str) and metric:  # an export was checked, by a server we called
            url = _config(row).get("url")
            where = f" (served at {url})" if url else ""
            return {"path": None, "describe": f"artifact path not recorded in the row{where}"}
        return {"path": None, "describe": NO_ARTIFACT}
    info: dict[str, Any] = {"path": str(path), "manifest": None}
    for base in (Path.cwd(), Path(str(row.get("source_file", "."))).parent):
        folder = base / path
        if (folder / "manifest.json").is_file():
            info["manifest"] = _manifest(folder)
            break
    m = info["manifest"]
    info["describe"] = (
        f"{path} ({m['format']} {m['precision']}, parity {m['parity']})"
        if m
        else f"{path} (manifest not found here)"
    )
    return info


def _manifest(folder: Path) -> dict[str, Any] | None:
    from engines.artifact import ArtifactError, read_manifest

    try:
        m = read_manifest(folder)
    except (ArtifactError, OSError, ValueError):
        return None
    parity = m.parity or {}
    return {
        "format": m.format,
        "precision": m.precision,
        "parity": m.verdict,
        "parity_metric": parity.get("metric"),
        "sealed": m.sealed,
        "folder": str(folder),
    }


def parity_verdict(row: pd.Series) -> str:
    """'passed …', 'FAILED …', 'recorded …' or 'n/a …', from the manifest or the row."""
    art = artifact_of(row)
    m = art.get("manifest")
    if m:
        return f"{m['parity']} ({m['parity_metric']})" if m["parity_metric"] else m["parity"]
    metric = row.get("parity_metric")
    if isinstance(metric, str) and metric:
        if metric.startswith("FAILED"):
            return "FAILED (parity_metric)"
        return f"recorded: {metric}"
    if art["path"] is None:
        return "n/a (published)" if is_published(row) else "n/a (in-memory eager/compile model)"
    return "not recorded"


# -- prices -----------------------------------------------------------------------------------


def price_for(hw: str, demand: Demand, rows: pd.DataFrame) -> Price:
    """The $/hr of `hw` on the demand's price basis: --price, else the hardware profile, else
    (on-demand only) the price the rows were measured at. Never invented."""
    overrides = dict(demand.prices)
    if hw in overrides:
        return Price(overrides[hw], "--price on the command line", time.strftime("%Y-%m-%d"))
    profile = PROFILES.get(hw)
    if profile is not None:
        price = profile.price(demand.basis)
        if price is not None:
            return price
    elif demand.basis == "on-demand":
        prices = rows.loc[rows["hw_type"] == hw, "price_per_hour"].dropna()
        if len(prices):
            src = rows.loc[prices.index[-1], "price_source"]
            return Price(float(prices.iloc[-1]), f"the rows' price ({src})", "as measured")
    have = "no hardware profile" if profile is None else "its profile has no published figure"
    raise PlanError(
        f"no {demand.basis} price for {hw} ({have}); pass --price {hw}=<$/hr> with the "
        f"price you pay, or leave {hw} out with --hw"
    )


def price_bases(options: list[Option], demand: Demand, rows: pd.DataFrame) -> list[dict]:
    """Each option's instances priced on every basis side by side (`--price-basis all`); a
    basis without a figure carries the one-line reason instead of a price."""
    out = []
    for o in options:
        bases = {}
        for basis in PRICE_BASES:
            try:
                price = price_for(o.hw_type, replace(demand, basis=basis), rows)
            except PlanError:
                have = "no published figure" if o.hw_type in PROFILES else "no hardware profile"
                why = f"no {basis} price for {o.hw_type}: {have}; pass --price {o.hw_type}=<$/hr>"
                bases[basis] = {"refused": why}
                continue
            monthly = monthly_cost(o.instances, price.per_hour)
            bases[basis] = {
                "price_per_hour": price.per_hour,
                "price_source": price.describe(),
                "monthly_cost": monthly,
                "effective_cost_per_1b": effective_cost_per_1b(monthly, demand.rate),
            }
        keys = ("task", "model_name", "rank", "hw_type", "image", "label", "instances")
        out.append({**{k: getattr(o, k) for k in keys}, "bases": bases})
    return out


# -- the plan ---------------------------------------------------------------------------------


@dataclass
class Option:
    """One hardware × engine × precision × boundary choice of a workload, planned."""

    task: str
    model_name: str
    hw_type: str
    engine: str
    precision: str
    image: str
    boundary: str
    batch_size: float | None
    concurrency: str
    inputs_per_request: float | None
    throughput: float
    latency_ms: float
    latency_column: str
    instances: int
    price_per_hour: float
    price_source: str
    monthly_cost: float
    effective_cost_per_1b: float
    full_load_cost_per_1b: float
    utilisation_mean: float
    utilisation_peak: float
    free_at_peak: float
    floor_cost_per_1b: float | None
    cost_over_floor: float | None
    artifact: dict[str, Any]
    parity: str
    label: str
    host_name: str
    source_file: str
    source_row: int
    published: bool = False
    source: str = ""
    price_basis_published: str = ""
    rank: int = 0
    # sized on the bounds: instances from the throughput's lower bound (and the point estimate
    # beside it), the latency limit checked on the percentile's upper bound
    throughput_sized: float = math.nan
    sizing: str = ""
    instances_point: int = 0
    monthly_cost_point: float = math.nan
    latency_point_ms: float = math.nan
    flags: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}


@dataclass
class Plan:
    """The answer: options ranked per workload, what could not be planned, and why."""

    demand: Demand
    options: list[Option] = field(default_factory=list)  # measured, ranked per workload
    published: list[Option] = field(default_factory=list)  # reference rows, never ranked with ours
    unmet: list[dict[str, Any]] = field(default_factory=list)  # groups with no row in the limit
    excluded: dict[str, int] = field(default_factory=dict)  # reason -> rows
    floors: list[dict[str, Any]] = field(default_factory=list)  # hardware without rows
    scan: pd.DataFrame = field(default_factory=pd.DataFrame)  # every candidate, as if chosen
    buy: list[buying.BuyOption] = field(default_factory=list)  # API list prices, never ranked
    bases: list[dict[str, Any]] = field(default_factory=list)  # each option on every basis
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def workloads(self) -> list[tuple[str, str]]:
        return list(dict.fromkeys((o.task, o.model_name) for o in self.options))

    def best(self, task: str, model: str) -> Option:
        return next(o for o in self.options if (o.task, o.model_name) == (task, model))

    def to_json(self) -> dict[str, Any]:
        d = self.demand
        return {
            "demand": {
                "rate_text": d.rate_text,
                "mean_inputs_per_s": d.rate,
                "peak_factor": d.peak,
                "peak_inputs_per_s": d.peak_rate,
                "latency_metric": d.metric,
                "limit_ms": d.limit_ms,
                "headroom": d.headroom,
                "headroom_means": "share of each instance's measured throughput kept free at peak",
                "price_basis": d.basis,
                "hours_per_month": HOURS_PER_MONTH,
                "price_overrides": dict(d.prices),
            },
            "files": self.files,
            "plans": [o.as_dict() for o in self.options],
            "published": [o.as_dict() for o in self.published],
            "no_row_meets_the_limit": [{k: _plain(v) for k, v in u.items()} for u in self.unmet],
            "excluded_rows": self.excluded,
            "floors_without_rows": self.floors,
            "notes": self.notes,
            **({"price_bases": _plain(self.bases)} if self.bases else {}),
            **({"buy": [_plain(b.as_dict()) for b in self.buy]} if self.buy else {}),
        }


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):  # numpy scalars
        return _plain(v.item())
    try:
        return None if pd.isna(v) else v
    except (TypeError, ValueError):
        return v


def _text(v: Any, missing: str = "-") -> str:
    return missing if v is None or (isinstance(v, float) and math.isnan(v)) or v == "" else str(v)


def option_for(row: pd.Series, demand: Demand, price: Price) -> Option:
    """The plan for serving the demand with `row`'s measured point."""
    point_thr = float(row["throughput_req_per_sec"])
    thr, sizing = throughput_bound(row)
    lat, col = limit_latency(row, demand.metric)
    point_lat, _ = latency_of(row, demand.metric)
    n = instances_needed(demand.peak_rate, thr, demand.headroom)
    n_point = instances_needed(demand.peak_rate, point_thr, demand.headroom)
    monthly = monthly_cost(n, price.per_hour)
    effective = effective_cost_per_1b(monthly, demand.rate)
    floor = row.get("floor_1B_cost")
    measured_price = row.get("price_per_hour")
    floor_here = None
    if pd.notna(floor) and pd.notna(measured_price) and measured_price > 0:
        floor_here = float(floor) * price.per_hour / float(measured_price)  # floor ∝ price
    capacity = n * thr
    return Option(
        task=row["task"],
        model_name=_text(row.get("model_name"), "?"),
        hw_type=row["hw_type"],
        engine=row["engine"],
        precision=_text(row.get("precision")),
        image=row["image"],
        boundary=boundary_of(row),
        batch_size=row.get("batch_size"),
        concurrency=row.get("concurrency", "-"),
        inputs_per_request=row.get("inputs_per_request"),
        throughput=point_thr,
        latency_ms=math.nan if lat is None else float(lat),
        latency_column=col or "not published",
        instances=n,
        price_per_hour=price.per_hour,
        price_source=price.describe(),
        monthly_cost=monthly,
        effective_cost_per_1b=effective,
        full_load_cost_per_1b=price.per_hour * 1e9 / (3600.0 * point_thr),
        utilisation_mean=demand.rate / capacity,
        utilisation_peak=demand.peak_rate / capacity,
        free_at_peak=1.0 - demand.peak_rate / capacity,
        floor_cost_per_1b=floor_here,
        cost_over_floor=effective / floor_here if floor_here else None,
        artifact=artifact_of(row),
        parity=parity_verdict(row),
        label=row.get("label", ""),
        host_name=str(row.get("host_name")),
        source_file=str(row.get("source_file")),
        source_row=int(row.get("source_row", 0)),
        published=is_published(row),
        source=str(row.get("source") or ""),
        price_basis_published=str(row.get("price_basis") or ""),
        throughput_sized=thr,
        sizing=sizing,
        instances_point=n_point,
        monthly_cost_point=monthly_cost(n_point, price.per_hour),
        latency_point_ms=math.nan if point_lat is None else float(point_lat),
        flags=sizing_flags(row, demand.metric),
    )


FILTERS = {
    "task": ("task",),
    "model": ("model_name", "model_id"),
    "hw": ("hw_type",),
    "engine": ("engine",),
    "precision": ("precision",),
}


def apply_filters(df: pd.DataFrame, filters: dict[str, list[str]], *, strict: bool) -> pd.DataFrame:
    """Rows matching every filter (a comma list matches any of its values). `strict`: a value
    no row has is an error that lists the values the rows do have."""
    for flag, values in filters.items():
        if not values:
            continue
        cols = FILTERS[flag]
        hit = pd.Series(False, index=df.index)
        for value in values:
            match = pd.Series(False, index=df.index)
            for c in cols:
                match |= df[c].astype(str) == value
            if strict and not match.any():
                have = sorted({str(v) for c in cols[:1] for v in df[c].dropna()})
                raise PlanError(
                    f"--{flag} {value}: no measured row has it (the rows have: "
                    f"{', '.join(have) or 'none'})"
                )
            hit |= match
        df = df[hit]
    return df


def _screen(df: pd.DataFrame, metric: str, *, published: bool) -> tuple[pd.DataFrame, dict]:
    """(candidate rows, {reason: count}); a published row needs no latency to be shown."""
    reasons = []
    for _, r in df.iterrows():
        why = exclusion(r, metric)
        if published and why == f"no {metric} latency recorded":
            why = None
        reasons.append(why)
    why = pd.Series(reasons, index=df.index, dtype=object)
    counts = why.dropna().value_counts().to_dict()
    return df[why.isna()], {str(k): int(v) for k, v in counts.items()}


def _within(rows: pd.DataFrame, demand: Demand) -> pd.Series:
    lat = [limit_latency(r, demand.metric)[0] for _, r in rows.iterrows()]
    return pd.Series([v is not None and v <= demand.limit_ms for v in lat], index=rows.index)


def _fastest(rows: pd.DataFrame) -> pd.Series:
    """The row to plan on: bounded rows first, then the most throughput at the lower bound
    (ties: the lower latency, then the first)."""
    order = rows.assign(
        _lat=[latency_of(r, "p99")[0] or math.inf for _, r in rows.iterrows()],
        # a row with an interval beats one without (a point estimate may be a lucky repeat),
        # then the most throughput at its lower bound
        _bounded=[throughput_bound(r)[1].startswith("95 %") for _, r in rows.iterrows()],
        _sized=[throughput_bound(r)[0] for _, r in rows.iterrows()],
    )
    order = order.sort_values(["_bounded", "_sized", "_lat"], ascending=[False, False, True])
    return rows.loc[order.index[0]]


def _nearest(rows: pd.DataFrame, metric: str) -> pd.Series:
    lat = [latency_of(r, metric)[0] for _, r in rows.iterrows()]
    return rows.loc[rows.index[min(range(len(lat)), key=lambda i: lat[i])]]


def describe_row(r: pd.Series, metric: str) -> str:
    """'cpu eager/fp32/sdpa batch 1 (1 model × 1 worker), p99 161.8 ms' for messages."""
    lat, _ = latency_of(r, metric)
    b = f"batch {int(r['batch_size'])}" if pd.notna(r.get("batch_size")) else "batch ?"
    where = f"{r['source_file']} row {r['source_row']}"
    return (
        f"{r['hw_type']} {r['image']} {b} ({r.get('concurrency', '-')}) at {metric} "
        f"{lat:,.1f} ms ({where})"
    )


def searched(row: pd.Series, demand: Demand) -> bool:
    """A rate the sweep's rate search passed (`harness.sweep --search rate`: Poisson arrivals
    whose p99 upper bound stayed under its target) with a target within the demand's p99
    limit: a measured sustainable load, so such rows are planned on first."""
    if demand.metric != "p99" or _config(row).get("rate_search") not in ("pass", "answer"):
        return False
    slo = stats.finite(row.get("slo_ms"))
    return slo is not None and slo <= demand.limit_ms


def _choose(rows: pd.DataFrame, demand: Demand, *, published: bool):
    """Per group: (chosen row or None, nearest row when none meets the limit); among the rows
    within the limit, the rate search's passing rates are preferred where the group has any."""
    out = []
    for key, g in rows.groupby(WORKLOAD + GROUP, dropna=False, sort=True):
        ok = _within(g, demand)
        if ok.any():
            within = g[ok]
            rated = pd.Series([searched(r, demand) for _, r in within.iterrows()], within.index)
            out.append((key, _fastest(within[rated] if rated.any() else within), None))
            continue
        unknown = g[[latency_of(r, demand.metric)[0] is None for _, r in g.iterrows()]]
        if published and not unknown.empty:
            out.append((key, _fastest(unknown), None))  # latency not published: shown, unchecked
            continue
        out.append((key, None, _nearest(g, demand.metric)))
    return out


def _options(chosen, demand: Demand, rows: pd.DataFrame, *, published: bool, plan: Plan):
    opts, unmet = [], []
    for key, row, nearest in chosen:
        if row is None:
            unmet.append({**dict(zip(WORKLOAD + GROUP, key, strict=True)), "nearest": nearest})
            continue
        try:
            price = price_for(row["hw_type"], demand, rows)
        except PlanError as e:
            if not published:
                raise
            plan.notes.append(f"published rows on {row['hw_type']} are not priced: {e}")
            continue
        opts.append(option_for(row, demand, price))
    return opts, unmet


def _rank(options: list[Option]) -> list[Option]:
    ranked = []
    by_workload: dict[tuple[str, str], list[Option]] = {}
    for o in options:
        by_workload.setdefault((o.task, o.model_name), []).append(o)
    for group in by_workload.values():
        group.sort(key=lambda o: (o.monthly_cost, _nan_last(o.latency_ms), -o.throughput))
        for i, o in enumerate(group, 1):
            o.rank = i
        ranked += group
    return ranked


def _nan_last(v: float) -> float:
    return math.inf if v is None or not math.isfinite(v) else v


def make_plan(
    measured: pd.DataFrame,
    demand: Demand,
    *,
    references: pd.DataFrame | None = None,
    filters: dict[str, list[str]] | None = None,
    api_prices: pd.DataFrame | None = None,
    all_bases: bool = False,
) -> Plan:
    """The plan for `demand` from measured rows (and, if given, published reference rows and
    embedding API prices, the "buy" rows). `all_bases`: also price every option on every
    price basis side by side."""
    filters = filters or {}
    plan = Plan(demand, files=sorted(set(measured["source_file"].astype(str))))
    if measured.empty:
        raise PlanError("no result rows to plan from; pass results folders or files")
    rows = collapse_repeats(apply_filters(measured, filters, strict=True))
    cand, plan.excluded = _screen(rows, demand.metric, published=False)
    if cand.empty:
        why = "; ".join(f"{n} {k}" for k, n in plan.excluded.items()) or "no rows"
        raise PlanError(f"none of the {len(rows)} rows can be planned on ({why})")
    chosen = _choose(cand, demand, published=False)
    if all(row is None for _, row, _ in chosen):
        nearest = _nearest(cand, demand.metric)
        raise PlanError(
            f"no measured row meets {demand.metric} ≤ {demand.limit_ms:g} ms; the nearest is "
            f"{describe_row(nearest, demand.metric)}: raise the limit or measure a faster "
            "configuration (a smaller batch, more model copies, faster hardware)"
        )
    opts, plan.unmet = _options(chosen, demand, cand, published=False, plan=plan)
    plan.options = _rank(opts)
    for u in plan.unmet:
        plan.notes.append(
            f"{u['task']} · {u['hw_type']} {u['engine']} {u['precision']} ({u['mode']}): no row "
            f"meets {demand.metric} ≤ {demand.limit_ms:g} ms; the nearest is "
            f"{describe_row(u['nearest'], demand.metric)}"
        )
    if references is not None and not references.empty:
        refs = apply_filters(references, filters, strict=False)
        refs, _ = _screen(refs, demand.metric, published=True)
        chosen = _choose(refs, demand, published=True)
        pub, unmet = _options(chosen, demand, refs, published=True, plan=plan)
        plan.published = _rank(pub)
        for u in unmet:
            plan.notes.append(
                f"published: {u['task']} · {u['model_name']} on {u['hw_type']}: no published "
                f"point meets {demand.metric} ≤ {demand.limit_ms:g} ms"
            )
    if api_prices is not None and not api_prices.empty:
        plan.buy = _buy(cand, plan, api_prices)
    if all_bases:
        plan.bases = price_bases(plan.options, demand, cand)
    plan.scan = _scan(cand, references, demand, plan, filters)
    plan.floors = _floors(cand, demand)
    plan.notes += _caveats(cand, plan)
    return plan


def _buy(cand: pd.DataFrame, plan: Plan, prices: pd.DataFrame) -> list[buying.BuyOption]:
    """Per embedding workload, each API price beside its best measured option (never ranked)."""
    out = []
    inputs_per_month = plan.demand.rate * SECONDS_PER_MONTH
    for task, model in plan.workloads():
        best = plan.best(task, model)
        rows = cand[(cand["task"] == task) & (cand["model_name"].astype(str) == model)]
        opts, why = buying.buy_options(
            task,
            model,
            rows,
            prices,
            inputs_per_month=inputs_per_month,
            build_cost_per_1b=best.effective_cost_per_1b,
            build=f"#1 {best.instances:,} × {best.hw_type} {best.image}",
        )
        out += opts
        if why:
            plan.notes.append(why)
    return out


def _scan(cand, references, demand: Demand, plan: Plan, filters) -> pd.DataFrame:
    """Every candidate row priced as if it were the deployment point (the plan chart)."""
    chosen = {(o.source_file, o.source_row) for o in [*plan.options, *plan.published]}
    frames = [cand]
    if references is not None and not references.empty and plan.published:
        refs = apply_filters(references, filters, strict=False)
        frames.append(_screen(refs, demand.metric, published=True)[0])
    out = []
    for df in frames:
        for _, r in df.iterrows():
            try:
                o = option_for(r, demand, price_for(r["hw_type"], demand, df))
            except PlanError:
                continue
            d = o.as_dict()
            d["chosen"] = (o.source_file, o.source_row) in chosen
            out.append(d)
    return pd.DataFrame(out)


def _floors(cand: pd.DataFrame, demand: Demand) -> list[dict[str, Any]]:
    """Per workload, the roofline floor of each accelerator profile that has no measured row:
    every FLOP at its dense fp16/bf16 peak, no instance rounding. A floor, never a plan."""
    out = []
    for (task, model), g in cand.groupby(WORKLOAD, dropna=False):
        flops = pd.to_numeric(g["flops_per_input"], errors="coerce").dropna()
        if flops.empty:
            continue
        fpi = float(flops.median())
        have = set(g["hw_type"])
        for name, p in PROFILES.items():
            price = p.price(demand.basis)
            if name in have or p.device == "cpu" or price is None or not p.peak_fp16_flops:
                continue
            floor_1b = price.per_hour * 1e9 / (3600.0 * p.peak_fp16_flops / fpi)
            out.append(
                {
                    "task": task,
                    "model_name": model,
                    "hw_type": name,
                    "floor_cost_per_1b": floor_1b,
                    "floor_monthly_cost": floor_1b * demand.rate * SECONDS_PER_MONTH / 1e9,
                    "flops_per_input": fpi,
                    "peak_flops": p.peak_fp16_flops,
                    "price_per_hour": price.per_hour,
                    "price_source": price.describe(),
                    "label": "floor only (not measured)",
                }
            )
    return out


def _caveats(cand: pd.DataFrame, plan: Plan) -> list[str]:
    notes = []
    if plan.excluded:
        why = "; ".join(f"{n} {k}" for k, n in sorted(plan.excluded.items()))
        notes.append(f"rows left out of the plan: {why}")
    if (cand["synthetic"] == "random weights").any():
        notes.append(
            "rows measured with random weights are labelled [random weights]: their throughput "
            "and latency are the architecture's, their predictions are not a model's"
        )
    if any(o.boundary == "in-process" for o in plan.options):
        notes.append(
            "in-process points time tokenize → forward → postprocess in one process: a served "
            "deployment adds HTTP and queueing; plan on over-HTTP rows (harness.sweep) for that"
        )
    if plan.options:
        notes.append(
            "instances are sized on each point's 95 % throughput lower bound and its latency "
            "limit checked on the percentile's 95 % upper bound (core.stats); the point "
            "estimate's instances and $/month are shown beside them"
        )
    for o in plan.options:
        for flag in o.flags:
            notes.append(f"#{o.rank} {o.task} · {o.hw_type} {o.image}: {flag}")
    isa = cand["cpu_isa"].dropna().astype(str) if "cpu_isa" in cand else pd.Series(dtype=str)
    amx = cand[isa.reindex(cand.index).fillna("").str.contains("amx_bf16")]
    if not amx.empty and not (amx["precision"] == "bf16").any():
        notes.append(
            f"rows from {', '.join(sorted(set(amx['host_name'].astype(str))))} ran on a CPU with "
            "AMX-BF16 but none at bf16: measure --precision bf16 (openvino or eager; parity "
            "against eager fp32 is checked) before buying for fp32 numbers"
        )
    if any(o.latency_column.startswith("latency_ms_") for o in plan.options):
        notes.append("latency marked (forward) is the forward pass only (no tokenization)")
    return notes
