"""The rate search under a p99 target (`harness.sweep --search rate --p99-ms T`): the bisection
and the early stopping on fake measurements, then the real sweep against the fake engine."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.stats import samples_needed
from harness.scenarios.rate_search import (
    FAIL,
    PASS,
    UNDECIDED,
    RateSearch,
    chunk_samples,
    describe_answer,
    goodput,
    probe,
    tally,
    verdict_of,
)

ROOT = Path(__file__).resolve().parent.parent


def drive(search: RateSearch, verdict) -> list[float]:
    """Run the search's steps as the HTTP plan does; `verdict(rate)` is a rate's verdict."""
    tried = []
    steps = search.steps()
    try:
        rate = next(steps)
        while True:
            tried.append(rate)
            rate = steps.send(verdict(rate))
    except StopIteration:
        pass
    return tried


def limit_at(limit: float):
    return lambda rate: PASS if rate <= limit else FAIL


@pytest.mark.parametrize("start", [1.0, 10.0, 47.3, 60.0, 1000.0])
@pytest.mark.parametrize("tolerance", [0.02, 0.1, 0.5])
def test_the_search_brackets_the_limit_within_its_tolerance_from_measured_rates(start, tolerance):
    s = RateSearch(tolerance=tolerance, start=start)
    tried = drive(s, limit_at(47.3))
    assert s.lo is not None and s.hi is not None and s.resolved
    assert s.lo <= 47.3 < s.hi and s.hi / s.lo - 1 <= tolerance
    assert s.lo in tried and s.hi in tried  # the answer and its bracket were both measured
    assert len(tried) == len(set(tried))  # no rate measured twice
    assert len(tried) <= 20


def test_bisection_needs_log_steps():
    s = RateSearch(tolerance=0.1, start=40.0)
    tried = drive(s, limit_at(47.3))
    assert tried[:2] == [40.0, 80.0]  # pass, then the doubling fails: bisect from there
    assert len(tried) <= 2 + 4  # log2(log(2) / log(1.1)) ~ 2.9 geometric halvings


def test_undecided_counts_as_failing():
    s = RateSearch(tolerance=0.1, start=10.0)
    drive(s, lambda r: PASS if r <= 30 else (UNDECIDED if r <= 60 else FAIL))
    assert s.lo <= 30 < s.hi and s.points[s.hi] == UNDECIDED


def test_the_range_bounds_the_search():
    top = RateSearch(tolerance=0.1, start=5.0, rate_max=30.0)
    tried = drive(top, limit_at(1000.0))
    assert max(tried) == 30.0 and top.lo == 30.0 and top.hi is None
    assert "at least 30.0 inputs/s" in describe_answer(top, 200.0)
    bottom = RateSearch(tolerance=0.1, start=20.0, rate_min=20.0)
    assert drive(bottom, limit_at(1.0)) == [20.0] and bottom.lo is None
    assert "every rate tried failed" in describe_answer(bottom, 200.0)


def test_a_resumed_search_replays_the_same_rates():
    a, b = RateSearch(0.1, 33.333333), RateSearch(0.1, 33.333333)
    assert drive(a, limit_at(47.3)) == drive(b, limit_at(47.3))
    assert all(r == float(f"{r:.4g}") for r in a.points)  # rates survive a CSV round trip


def test_the_answer_line_states_the_rate_and_tolerance():
    s = RateSearch(tolerance=0.1, start=40.0)
    drive(s, limit_at(47.3))
    line = describe_answer(s, 200.0, inputs_per_request=2)
    assert line.startswith("highest rate with p99 ≤ 200 ms at 95 %: ")
    assert f"{s.lo * 2:,.1f} inputs/s (tolerance ±10 %" in line


def bernoulli_run(share: float, rate: float, seed: int = 0):
    """A fake chunk runner: Poisson arrivals at `rate`, each over the target with `share`."""
    rng = np.random.default_rng(seed)
    calls = []

    def run(duration_s: float, i: int) -> tuple[int, int]:
        n = int(rng.poisson(rate * duration_s))
        calls.append(duration_s)
        return n, int((rng.random(n) < share).sum())

    return run, calls


def test_a_clear_pass_stops_at_the_fewest_samples():
    run, calls = bernoulli_run(0.0, rate=100.0)
    p = probe(run, 100.0, max_samples=2000, max_seconds=60)
    assert p.verdict == PASS and p.over == 0
    assert samples_needed(99) <= p.n < 2 * samples_needed(99)
    assert p.chunks <= 3


def test_a_clear_failure_stops_after_the_first_chunk():
    run, calls = bernoulli_run(0.3, rate=100.0)
    p = probe(run, 100.0, max_samples=2000, max_seconds=60)
    assert p.verdict == FAIL and p.chunks == 1 and p.n < samples_needed(99)


def test_a_borderline_rate_spends_the_budget_and_is_undecided():
    run, calls = bernoulli_run(0.01, rate=100.0, seed=3)  # exactly at the p99: never clear
    p = probe(run, 100.0, max_samples=1000, max_seconds=60)
    if p.verdict == UNDECIDED:  # it stopped at the budget, not before
        assert p.n >= 1000 or p.seconds >= 60
    # the time cap binds too: never more seconds of arrivals than allowed
    run, calls = bernoulli_run(0.01, rate=10.0, seed=3)
    p = probe(run, 10.0, max_samples=100_000, max_seconds=20)
    assert sum(calls) <= 20 + 1e-9 and p.seconds <= 20 + 1e-9


def test_chunks_grow_from_a_third_to_the_bound_then_by_half():
    need = samples_needed(99)
    assert chunk_samples(0) == need // 3
    assert chunk_samples(need // 3) + need // 3 == need + need // 10
    assert chunk_samples(1000) == 500


def test_tally_counts_failed_and_unanswered_requests_as_over():
    ms = 1_000_000
    samples = SimpleNamespace(
        start=np.array([0, 0, 0, 0]),
        end=np.array([10 * ms, 300 * ms, 50 * ms, 20 * ms]),
        kind=np.array(["ok", "ok", "http_5xx", "ok"]),
        inputs=np.array([2, 2, 2, 2]),
    )
    thr = SimpleNamespace(avg=3.0)  # inputs/s answered
    res = SimpleNamespace(samples=samples, dropped=1, unstarted=2, throughput=thr)
    assert tally(res, 200.0) == (7, 5)  # 300 ms, the 5xx, one dropped and two never sent
    assert goodput(res, 200.0) == 2.0  # 4 of the 6 answered inputs within 200 ms, of 3/s


def test_verdict_of_a_stored_row():
    assert verdict_of({"config_json": json.dumps({"rate_search": "pass"})}) == PASS
    assert verdict_of({"config_json": json.dumps({"rate_search": "answer"})}) == "answer"
    assert verdict_of({"config_json": "{}"}) == UNDECIDED
    assert verdict_of(None) == UNDECIDED


def _http_row(key: str, thr: float, p99: float, **kw) -> dict:
    from helpers import schema_row

    from harness import hardware

    price = hardware.PROFILES["cpu"].price_per_hour
    r = schema_row(
        mode="http", precision="fp32", price_per_hour=price, config_key=key, vus=8,
        throughput_req_per_sec=thr, p95_latency_ms=p99 * 0.8, p99_latency_ms=p99,
        config_json=json.dumps({"engine": {"artifact": None}, **kw.pop("cfg", {})}),
    )  # fmt: skip
    r.update(kw)
    r["1B_cost"] = price * 1e9 / (3600 * thr)
    return r


def test_the_planner_prefers_the_rate_search_rows():
    from analysis import frames
    from analysis.planner import Demand, make_plan
    from harness.results import COLUMNS

    closed = _http_row("closed", 120.0, 60.0)  # a closed loop: more inputs/s, p99 within
    rate = dict(offered_rate=90.0, slo_ms=100.0, goodput=89.5, p99_upper_ms=80.0)
    answer = _http_row("answer", 90.0, 70.0, vus=None, cfg={"rate_search": "answer"}, **rate)
    failed = _http_row(
        "fail", 95.0, 90.0, vus=None, cfg={"rate_search": "fail"}, **{**rate, "offered_rate": 99.0}
    )
    df = frames.prepare(pd.DataFrame([closed, answer, failed], columns=COLUMNS))
    demand = dict(rate=100.0, peak=1.0, headroom=0.2, metric="p99")
    chosen = make_plan(df, Demand(limit_ms=100.0, **demand)).options[0]
    assert chosen.throughput == 90.0  # the rate that held the p99, not the faster closed loop
    # a looser target than the demand's limit proves nothing about it: the usual choice
    looser = df.assign(slo_ms=[None, 150.0, 150.0])
    assert make_plan(looser, Demand(limit_ms=100.0, **demand)).options[0].throughput == 120.0


# ------------------------------------------------------------------------- the real sweep
#: one forward at a time (max batch 1), each sleeping 10 ms: the server answers at most
#: 1000 / 10 = 100 requests/s, whatever the load on the box (the sleep is wall time)
SERVICE_MS = 10.0
CAPACITY = 1000.0 / SERVICE_MS
TARGET_MS = 200.0  # 20 service times: the limit sits close to (under) the capacity
TOLERANCE = 0.2


def _sweep(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        *"-m harness.sweep --engine fake --model distilbert-sentiment-tiny --max-batch-sizes 1 --vus-max 16 --iterations 100 --max-duration 5 --no-ceiling --num-samples 32 --fake-per-input-ms 0 --output-dir".split(),
        str(out),
        "--fake-latency-ms",
        str(SERVICE_MS),
        *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def test_rate_search_needs_a_p99_target(tmp_path):
    r = _sweep(tmp_path, "--search", "rate")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "--search rate needs --p99-ms" in lines[0], r.stderr


def test_rate_search_finds_the_limit_of_a_server_of_known_capacity(tmp_path):
    r = _sweep(
        tmp_path,
        *f"--search rate --p99-ms {TARGET_MS:g} --rate-tolerance {TOLERANCE}".split(),
        *"--max-samples 800 --rate-max-duration 10".split(),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    df = pd.read_csv(tmp_path / "results.csv")
    cfg = df["config_json"].map(json.loads)
    rates = df[cfg.map(lambda c: c.get("search") == "rate")]
    verdicts = cfg[rates.index].map(lambda c: c["rate_search"])
    # every probed rate is one row with its goodput, SLO, sample count and p99 bound
    assert len(rates) >= 3 and (rates["mode"] == "http").all()
    assert rates["offered_rate"].notna().all() and (rates["slo_ms"] == TARGET_MS).all()
    assert rates["goodput"].notna().all() and rates["n_samples"].gt(0).all()
    assert rates["p99_resolved"].notna().all()
    assert set(verdicts) <= {"pass", "fail", "undecided", "answer"}
    # one answer, the highest passing rate, and a measured failing rate within the tolerance
    answer = rates[verdicts == "answer"]
    assert len(answer) == 1, verdicts.tolist()
    found = float(answer["offered_rate"].iloc[0])
    failing = rates[verdicts.isin(["fail", "undecided"])]["offered_rate"]
    above = failing[failing > found]
    assert not above.empty and above.min() / found - 1 <= TOLERANCE + 1e-9
    assert (rates[verdicts == "pass"]["offered_rate"] < found).all()
    # the limit: no rate above the capacity keeps its p99 under 20 service times for seconds
    # (the backlog grows by (rate - capacity) x t); below it, an M/D/1 queue at 100/s holds
    # p99 <= 200 ms up to ~89/s, and the search may land up to the tolerance under the limit;
    # the server's own overhead on a busy 2-core box (HTTP, tokenizing, the GIL) lowers the
    # capacity by a few ms per request at most: half the capacity is a floor with room to spare
    assert 0.5 * CAPACITY <= found <= 1.1 * CAPACITY, (found, r.stdout)
    assert float(answer["goodput"].iloc[0]) >= 0.9 * found  # the answer's inputs mostly in SLO
    line = next(ln for ln in r.stdout.splitlines() if "highest rate with p99" in ln)
    assert f"highest rate with p99 ≤ {TARGET_MS:g} ms at 95 %: {found:,.1f} inputs/s" in line
    assert f"tolerance ±{TOLERANCE * 100:g} %" in line
    # the closed-loop point the search started from has its goodput under the target too
    start = df[~df.index.isin(rates.index)]
    assert (
        len(start) == 1 and start["goodput"].notna().all() and (start["slo_ms"] == TARGET_MS).all()
    )
    print(f"found {found:g} req/s of a {CAPACITY:g} req/s server: {line}")
    # a rerun resumes every rate and replays the same search: nothing measured twice
    again = _sweep(
        tmp_path,
        *f"--search rate --p99-ms {TARGET_MS:g} --rate-tolerance {TOLERANCE}".split(),
        *"--max-samples 800 --rate-max-duration 10".split(),
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(pd.read_csv(tmp_path / "results.csv")) == len(df)
    assert f"{TARGET_MS:g} ms at 95 %: {found:,.1f} inputs/s" in again.stdout
