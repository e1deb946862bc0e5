"""The cost model (DESIGN.md): dollars per input from throughput and price, and the roofline floor."""

from __future__ import annotations

import math

from core.errors import ConfigError


def _check(price_per_hour: float | None, throughput: float) -> None:
    if price_per_hour is None or not math.isfinite(price_per_hour) or price_per_hour <= 0:
        raise ConfigError(
            f"no usable price ({price_per_hour!r}); pass --price-per-hour (never priced at $0)"
        )
    if not math.isfinite(throughput) or throughput < 0:
        raise ConfigError(f"throughput must be a finite number >= 0, got {throughput!r}")


def cost_per_sec(price_per_hour: float) -> float:
    _check(price_per_hour, 0.0)
    return price_per_hour / 3600.0


def cost_per_1m_inf(price_per_hour: float, inputs_per_sec: float) -> float:
    """$ per 1M inputs = price_per_hour * 1e6 / (3600 * throughput)."""
    _check(price_per_hour, inputs_per_sec)
    return math.inf if inputs_per_sec == 0 else price_per_hour * 1e6 / (3600.0 * inputs_per_sec)


def cost_per_1b(price_per_hour: float, inputs_per_sec: float) -> float:
    """`1B_cost`: what a billion inputs cost at this throughput, price_per_hour * 1e9 /
    (3600 * throughput)."""
    return cost_per_1m_inf(price_per_hour, inputs_per_sec) * 1000.0


def seconds_per_billion(inputs_per_sec: float) -> float:
    return math.inf if inputs_per_sec <= 0 else 1e9 / inputs_per_sec


def cost_per_1m_tokens(price_per_hour: float, tokens_per_sec: float) -> float:
    """$ per 1M useful (unpadded) tokens; transfers between datasets of different lengths."""
    return cost_per_1m_inf(price_per_hour, tokens_per_sec)


def roofline_floor_1b(price_per_hour: float, flops_per_input: float, peak_flops: float) -> float:
    """Lowest $/1B physically possible: every FLOP at peak, nothing else costs time."""
    _check(price_per_hour, 0.0)
    if not peak_flops or peak_flops <= 0:
        raise ConfigError("roofline floor needs a peak FLOP/s > 0")
    return cost_per_1b(price_per_hour, peak_flops / flops_per_input)


def efficiency(floor_cost: float, measured_cost: float) -> float:
    """floor / measured, in (0, 1]; 1.0 would be a run at the hardware's peak FLOP/s."""
    if not measured_cost or not math.isfinite(measured_cost):
        return 0.0
    return floor_cost / measured_cost


def cost_columns(
    price_per_hour: float,
    inputs_per_sec: float,
    tokens_per_sec: float,
    flops_per_input: float | None,
    peak_flops: float | None,
) -> dict[str, float | None]:
    """Every cost column of a result row, from one throughput and one price."""
    cols: dict[str, float | None] = {
        "seconds_per_billion": seconds_per_billion(inputs_per_sec),
        "cost_per_sec": cost_per_sec(price_per_hour),
        "cost_per_1m_inf": cost_per_1m_inf(price_per_hour, inputs_per_sec),
        "1B_cost": cost_per_1b(price_per_hour, inputs_per_sec),
        "cost_per_1m_tokens": cost_per_1m_tokens(price_per_hour, tokens_per_sec),
        "floor_1B_cost": None,
        "efficiency": None,
        "achieved_tflops": None,
        "peak_tflops": peak_flops / 1e12 if peak_flops else None,
    }
    if flops_per_input:
        cols["achieved_tflops"] = inputs_per_sec * flops_per_input / 1e12
        if peak_flops:
            floor = roofline_floor_1b(price_per_hour, flops_per_input, peak_flops)
            cols["floor_1B_cost"] = floor
            cols["efficiency"] = efficiency(floor, cols["1B_cost"])
    return cols
