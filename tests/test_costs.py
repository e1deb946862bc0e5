import math

import pytest

from core import costs
from core.errors import ConfigError
from harness.hardware import AWS_INF2_XLARGE

# seed 002: neuronperf on inf2.xlarge, throughput_avg -> cost_per_1m_inf at $0.7582/hr
SEED_002 = [
    (966.409, 0.218),
    (542.479, 0.389),
    (931.985, 0.227),
    (574.395, 0.368),
    (1001.071, 0.211),
    (595.899, 0.354),
    (1053.228, 0.2),
    (596.437, 0.354),
    (364.984, 0.578),
    (371.016, 0.569),
    (207.286, 1.018),
    (211.336, 0.999),
    (341.795, 0.618),
    (188.504, 1.12),
    (340.787, 0.619),
    (188.773, 1.118),
    (352.0, 0.6),
    (194.42, 1.086),
    (349.75, 0.604),
]


def test_seed_002_first_row_at_aws_list_price():
    assert round(costs.cost_per_1m_inf(AWS_INF2_XLARGE, 966.409), 3) == 0.218


@pytest.mark.parametrize("throughput,expected", SEED_002)
def test_reproduces_seed_002_cost_per_1m(throughput, expected):
    # Every row of the column reproduces to the printed 3 decimals at $0.76/hr, the rounded
    # inf2.xlarge price the seed evidently used; at the exact $0.7582 list price rows agree
    # within 0.5% (e.g. 931.985 rps -> 0.2260, printed 0.227).
    assert round(costs.cost_per_1m_inf(0.76, throughput), 3) == pytest.approx(expected, abs=1e-9)
    assert costs.cost_per_1m_inf(AWS_INF2_XLARGE, throughput) == pytest.approx(expected, rel=5e-3)


def test_1b_cost_matches_seed_000_definition():
    # seed 000's best classification: L4 at $0.80/hr, $253.82 per 1B -> implied throughput
    thr = 0.80 * 1e9 / (3600 * 253.82)
    assert costs.cost_per_1b(0.80, thr) == pytest.approx(253.82, rel=1e-9)
    assert costs.cost_per_1b(0.8, 1000) == pytest.approx(1000 * costs.cost_per_1m_inf(0.8, 1000))
    assert costs.seconds_per_billion(1000) == 1e6
    assert costs.cost_per_sec(3.6) == pytest.approx(0.001)


def test_zero_throughput_costs_infinity_not_zero():
    assert math.isinf(costs.cost_per_1b(1.0, 0))


@pytest.mark.parametrize("price", [None, 0, -1.0, float("nan")])
def test_missing_or_zero_price_is_an_error(price):
    with pytest.raises(ConfigError, match="price"):
        costs.cost_per_1m_inf(price, 100.0)


def test_cost_per_1m_tokens():
    # 100 inputs/s of 50 tokens = 5000 tokens/s
    assert costs.cost_per_1m_tokens(3.6, 5000) == pytest.approx(3.6 * 1e6 / 3600 / 5000)


def test_roofline_floor_and_efficiency():
    # 1 TFLOP/s peak, 1 GFLOP per input -> 1000 inputs/s at best
    floor = costs.roofline_floor_1b(3.6, 1e9, 1e12)
    assert floor == pytest.approx(costs.cost_per_1b(3.6, 1000))
    assert costs.efficiency(floor, 2 * floor) == pytest.approx(0.5)
    cols = costs.cost_columns(3.6, 500, 500 * 100, 1e9, 1e12)
    assert cols["efficiency"] == pytest.approx(0.5)
    assert cols["achieved_tflops"] == pytest.approx(0.5)
    assert cols["1B_cost"] == pytest.approx(2 * floor)


def test_cost_columns_without_flops_claim_no_floor():
    cols = costs.cost_columns(1.0, 10, 100, None, 1e12)
    assert cols["floor_1B_cost"] is None and cols["efficiency"] is None
