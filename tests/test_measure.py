import numpy as np
import pytest

from core.measure import Latency, Throughput, TokenStats


def test_latency_percentiles_from_ns():
    lat = Latency.from_ns(np.arange(1, 101) * 1_000_000)  # 1..100 ms
    assert lat.count == 100
    assert lat.p0 == 1 and lat.p100 == 100
    assert lat.p50 == pytest.approx(50.5)
    assert lat.p99 == pytest.approx(99.01)
    assert lat.avg == pytest.approx(50.5)


def test_latency_empty_is_nan_not_zero():
    assert np.isnan(Latency.from_ns([]).p50)


def test_throughput_buckets_drop_first_and_last():
    # 10 seconds of 1 ms calls, 100 per second, batch 4 -> 400 inputs/s;
    # the first and last buckets are partial and must be dropped.
    starts = np.arange(0, 10_000) * 1_000_000 + 500_000_000
    ends = starts + 1_000_000
    thr = Throughput.from_completions(starts, ends, np.full(starts.size, 4))
    assert thr.method == "1s-buckets"
    assert thr.avg == pytest.approx(4000, rel=1e-6)
    assert thr.peak == pytest.approx(4000, rel=1e-6)


def test_throughput_counts_inputs_not_calls():
    starts = np.arange(0, 1000) * 10_000_000
    ends = starts + 5_000_000
    one = Throughput.from_completions(starts, ends, np.ones(1000))
    eight = Throughput.from_completions(starts, ends, np.full(1000, 8))
    assert eight.avg == pytest.approx(8 * one.avg)


def test_throughput_slow_calls_use_completion_rate():
    # 3 calls of 2 s each, batch 32: too coarse for 1-second buckets
    starts = np.array([0, 2, 4]) * 1_000_000_000
    ends = starts + 2_000_000_000
    thr = Throughput.from_completions(starts, ends, [32, 32, 32])
    assert thr.method == "completion-rate"
    assert thr.avg == pytest.approx(16.0)
    assert thr.avg >= 0


def test_token_stats():
    s = TokenStats.from_counts([2, 4, 6])
    assert (s.avg, s.p50, s.min, s.max) == (4, 4, 2, 6)
    assert s.mean_sq == pytest.approx((4 + 16 + 36) / 3)
