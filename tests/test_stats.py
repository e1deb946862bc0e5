"""How sure a row is: the statistics against hand-computed cases, their coverage over seeded
runs of a known distribution, the host probe's verdict, and the planner sizing on the bounds."""

from __future__ import annotations

import math
from math import comb

import numpy as np
import pandas as pd
import pytest
from helpers import schema_row

from analysis import frames
from analysis.planner import Demand, make_plan
from core import stats
from core.measure import Latency, Throughput
from core.noise import HostReading, HostWatch
from harness import hardware
from harness.results import COLUMNS

# ------------------------------------------------------------------ hand-computed cases


def test_t_interval_by_hand():
    ci = stats.t_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2) = 4.302653: half-width 4.302653 / sqrt(3) = 2.484137
    assert ci.mean == 2.0 and ci.n == 3 and ci.method == "t(repeats)"
    assert ci.low == pytest.approx(2 - 2.484137, abs=1e-5)
    assert ci.high == pytest.approx(2 + 2.484137, abs=1e-5)
    one = stats.t_interval([5.0])
    assert one.method == "single" and math.isnan(one.low)


def test_t_quantile_table_and_series_agree_at_the_seam():
    assert stats.t_quantile_975(1) == pytest.approx(12.7062, abs=1e-4)
    assert stats.t_quantile_975(30) == pytest.approx(2.0423, abs=1e-4)
    assert stats.t_quantile_975(31) == pytest.approx(2.0395, abs=1e-4)  # series: t(31)
    assert stats.t_quantile_975(120) == pytest.approx(1.9799, abs=1e-4)
    with pytest.raises(ValueError):
        stats.t_quantile_975(0)


def test_binomial_bound_on_a_percentile_by_hand():
    # the median of 100 samples: the smallest r with P(Bin(100, .5) <= r - 1) >= 0.95
    assert sum(comb(100, k) for k in range(58)) / 2**100 < 0.95  # r = 58 is not enough
    assert sum(comb(100, k) for k in range(59)) / 2**100 >= 0.95  # r = 59 is
    assert stats.upper_rank(100, 0.5) == 59
    samples = np.arange(1, 101, dtype=float)  # sorted: the r-th sample is r
    assert stats.percentile_upper_bound(samples[::-1], 50) == 59.0
    # the p99: 299 samples bound it by their maximum (1 - 0.99^299 = 0.9505), 298 cannot
    assert stats.upper_rank(299, 0.99) == 299
    assert stats.upper_rank(298, 0.99) is None
    assert stats.percentile_upper_bound(np.ones(298), 99) is None


def test_samples_needed_for_a_percentile():
    assert stats.samples_needed(99) == 299  # ln(0.05) / ln(0.99) = 298.07
    assert stats.samples_needed(95) == 59
    assert stats.samples_needed(50) == 5
    assert stats.samples_needed(99.9) == 2995


def test_early_stopping_decides_when_the_answer_is_clear():
    assert stats.exceedance_decided(0, 299, 99) is True  # the max is under the limit
    assert stats.exceedance_decided(0, 100, 99) is None  # too few to say either way
    assert stats.exceedance_decided(10, 100, 99) is False  # 10 % over: clearly not a p99
    assert stats.exceedance_decided(3, 1000, 99) is True
    assert stats.exceedance_decided(15, 1000, 99) is None


def test_ratio_interval_by_hand():
    a = stats.t_interval([100.0, 102.0, 98.0])  # mean 100, se 1.1547
    b = stats.t_interval([200.0, 204.0, 196.0])  # mean 200, se 2.3094
    r = stats.ratio_interval(a, b)
    se_log = math.sqrt(2 * (2 / math.sqrt(3) / 100) ** 2)
    assert r.mean == pytest.approx(2.0)
    assert r.low == pytest.approx(2 * math.exp(-4.302653 * se_log), rel=1e-5)
    assert r.high == pytest.approx(2 * math.exp(4.302653 * se_log), rel=1e-5)
    assert math.isnan(stats.ratio_interval(stats.t_interval([1.0]), b).low)


# ------------------------------------------------------------------ coverage, seeded


class FakeEngine:
    """Calls whose latency is drawn from a known distribution: exponential, mean 10 ms."""

    MEAN_MS = 10.0

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def true_percentile(self, q: float) -> float:
        return -self.MEAN_MS * math.log(1 - q / 100)

    def calls_ns(self, n: int) -> np.ndarray:
        return self.rng.exponential(self.MEAN_MS * 1e6, size=n)


@pytest.mark.parametrize("q", [50, 95, 99])
def test_percentile_bounds_cover_the_true_percentile_as_promised(q):
    runs, covered = 400, 0
    for seed in range(runs):
        engine = FakeEngine(seed)
        lat = Latency.from_ns(engine.calls_ns(600))
        covered += getattr(lat, f"p{q}_upper") >= engine.true_percentile(q)
    # promised: at least 95 %; with 400 runs the coverage's own sd is about 1.1 points
    assert covered / runs >= 0.93, covered / runs


def test_batch_means_interval_covers_the_true_rate():
    runs, covered = 300, 0
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        windows = rng.poisson(100.0, size=12)  # inputs completed per 1-s window, rate 100/s
        ci = stats.batch_means(windows)
        covered += ci.low <= 100.0 <= ci.high
    assert covered / runs >= 0.92, covered / runs


def test_rows_say_when_the_p99_is_not_resolved():
    short = Latency.from_ns(np.full(100, 5e6)).bound_columns()
    assert short["p99_resolved"] is False and short["p99_upper_ms"] is None
    assert short["p99_samples_needed"] == 299 and short["n_samples"] == 100
    long = Latency.from_ns(np.linspace(1e6, 10e6, 1000)).bound_columns()
    assert long["p99_resolved"] is True and long["p99_upper_ms"] >= 9.9


def test_throughput_interval_from_one_runs_windows():
    end = np.arange(1, 10_001) * 1_000_000  # 10 000 calls of 1 ms, one input each: 1000/s
    thr = Throughput.from_completions(end - 1_000_000, end, np.ones_like(end))
    cols = thr.interval_columns()
    assert cols["throughput_ci_method"] == "batch-means" and cols["throughput_windows"] == 9
    assert cols["throughput_ci_low"] <= 1000.0 <= cols["throughput_ci_high"]
    few = Throughput.from_completions([0], [int(3e9)], [32]).interval_columns()
    assert few["throughput_ci_method"] == "single" and few["throughput_ci_low"] is None


# ------------------------------------------------------------------ a noisy host


def test_host_reading_marks_a_disturbed_point():
    quiet = HostReading(10.0, 11.0, 0.1)
    assert quiet.columns()["disturbed"] is False and quiet.reason is None
    slower = HostReading(10.0, 16.0, 0.0)
    assert slower.columns()["disturbed"] is True and "probe" in slower.reason
    busy = HostReading(10.0, 10.0, 1.3)
    assert "1.30 cores" in busy.reason


def test_host_watch_records_both_probes():
    with HostWatch(enabled=True) as w:
        sum(range(10_000))
    cols = w.columns()
    assert cols["probe_before_ms"] > 0 and cols["probe_after_ms"] > 0
    assert cols["disturbed"] in (True, False)
    with HostWatch(enabled=False) as off:
        pass
    assert off.columns() == {}  # off: nothing recorded, never a guess


# ------------------------------------------------------------------ the planner on the bounds


def _row(thr: float, rep: int, **kw) -> dict:
    price = hardware.PROFILES["cpu"].price_per_hour
    r = schema_row(
        precision="fp32", mode="http", price_per_hour=price, throughput_req_per_sec=thr,
        p99_latency_ms=100.0, p99_upper_ms=120.0, p99_resolved=True, repeat=rep,
        config_key=f"k{rep}", n_samples=1000, vus=4, **kw,
    )  # fmt: skip
    r["1B_cost"] = price * 1e9 / (3600 * thr)
    return r


def _plan(*rows, limit=200.0):
    df = frames.prepare(pd.DataFrame(list(rows), columns=COLUMNS))
    return make_plan(df, Demand(rate=1000.0, peak=1.0, headroom=0.0, limit_ms=limit))


def test_plan_sizes_on_the_lower_bound_across_repeats():
    plan = _plan(_row(95.0, 0), _row(100.0, 1), _row(105.0, 2))  # mean 100, t over 3 repeats
    o = plan.options[0]
    ci = stats.t_interval([95.0, 100.0, 105.0])
    assert o.throughput == pytest.approx(100.0)
    assert o.instances_point == 10  # 1000 / 100
    assert o.instances == math.ceil(1000 / ci.low) > o.instances_point
    assert o.monthly_cost > o.monthly_cost_point
    assert "t(repeats)" in o.sizing
    # two repeats far apart: the interval reaches 0; sized on the slower one, and said so
    wide = _plan(_row(90.0, 0), _row(110.0, 1)).options[0]
    assert wide.instances == math.ceil(1000 / 90.0) and "slowest of 2" in wide.sizing
    assert any("interval reaches 0" in f for f in wide.flags)


def test_plan_checks_the_limit_on_the_p99_bound_and_flags_what_is_unsure():
    # the point p99 (100) is within 110 ms, its bound (120) is not: no plan from it
    with pytest.raises(Exception, match="no measured row meets"):
        _plan(_row(100.0, 0), limit=110.0)
    unresolved = _row(100.0, 0, disturbed=True, disturbed_reason="probe differs")
    unresolved.update(p99_upper_ms=None, p99_resolved=False, n_samples=120)
    o = _plan(unresolved).options[0]
    assert any("p99 not resolved (120 samples" in f for f in o.flags)
    assert any(f.startswith("disturbed: probe differs") for f in o.flags)
    assert o.instances == o.instances_point  # no interval: the point estimate, said so
    assert o.sizing.startswith("point estimate")


# ------------------------------------------------------------------ the CPU's matrix units


def test_cpu_isa_reads_the_matrix_unit_flags():
    xeon = "processor: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_tile amx_bf16 amx_int8\n"
    assert hardware.cpu_isa(xeon) == (
        "avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8",
    )  # fmt: skip
    assert hardware.cpu_isa("flags: fpu sse2 avx2\n") == ("avx2",)
    assert hardware.cpu_isa("") == ()


def test_an_amx_host_is_told_that_bf16_is_there():
    from analysis.console_tables import isa_hints

    rows = [{"cpu_isa": "avx512f,amx_bf16,amx_int8", "precision": "fp32"}]
    hints = " ".join(isa_hints(rows))
    assert "AMX-BF16" in hints and "--precision bf16" in hints and "int8" in hints
    assert isa_hints([{"cpu_isa": "avx2", "precision": "fp32"}]) == []
    plan = _plan(_row(100.0, 0, cpu_isa="avx512f,amx_bf16"))
    assert any("AMX-BF16" in n for n in plan.notes)


def test_a_disturbed_point_is_named_with_what_to_do():
    from analysis.console_tables import confidence_lines

    rows = [
        {"batch_size": 8, "disturbed": True, "disturbed_reason": "CPU probe 26.5 ms before"},
        {"batch_size": 32, "disturbed": False},
    ]
    flagged = [ln for ln in confidence_lines(rows) if "disturbed" in ln]
    assert len(flagged) == 1
    assert "batch 8:" in flagged[0] and "CPU probe 26.5 ms before" in flagged[0]
    assert "--remeasure-disturbed" in flagged[0]
