"""Build against buy: embedding API list prices beside the measured plan.

An API bills tokens; the plan bills inputs. Each price in `analysis/references/api_prices.csv`
is turned into $/1B inputs with the tokens per input measured in the rows the plan was made
from (their `avg_tokens`), then into $/month at the demand's mean rate. These rows are list
prices, never measurements: they are marked, never ranked with measured rows and never the
plan's answer, and they are shown only for the task they serve (text embeddings).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import references
from core.errors import BillionbenchError

#: the one task an embedding API serves
TASK = "embedding"


class BuyError(BillionbenchError):
    """The API price file breaks its contract; the message says which row and why."""


def read_api_prices(path: str | Path = references.API_PRICES) -> pd.DataFrame:
    """The API price rows, refused (one line) when a column is missing, a price is not > 0 or
    a row has no source or date."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"source": str, "date": str, "provider": str, "model": str})
    except (OSError, pd.errors.ParserError) as e:
        raise BuyError(f"{path}: cannot read the API prices ({e})") from e
    missing = [c for c in references.API_PRICE_COLUMNS if c not in df.columns]
    if missing:
        raise BuyError(f"{path}: API price columns missing: {missing}")
    for i, r in df.iterrows():
        std, batch = r["usd_per_1m_tokens"], r["usd_per_1m_tokens_batch"]
        if not (pd.notna(std) and std > 0) or (pd.notna(batch) and not batch > 0):
            raise BuyError(f"{path} row {i}: a price must be > 0 $/1M tokens")
        if not (isinstance(r["source"], str) and r["source"] and isinstance(r["date"], str)):
            raise BuyError(f"{path} row {i}: every API price needs its source and date")
    return df


@dataclass
class BuyOption:
    """One API price, converted to the plan's units for one embedding workload."""

    task: str
    model_name: str  # the workload's model (what was measured)
    provider: str
    api_model: str
    tier: str  # standard | batch
    usd_per_1m_tokens: float
    tokens_per_input: float
    tokens_from: str  # which measured figure gave the tokens per input
    cost_per_1b: float
    monthly_cost: float
    build_cost_per_1b: float  # the best measured option's effective $/1B
    build: str  # that option, described
    ratio: float  # > 1: build is that many times cheaper; < 1: buy is
    source: str
    date: str
    buy: bool = True

    @property
    def verdict(self) -> str:
        if self.ratio >= 1:
            return f"build is {self.ratio:,.1f}× cheaper"
        return f"buy is {1 / self.ratio:,.1f}× cheaper"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def tokens_per_input(rows: pd.DataFrame) -> tuple[float, str] | None:
    """(tokens per input, how it was taken): the median of the rows' measured `avg_tokens`;
    None where no row recorded it."""
    col = rows["avg_tokens"] if "avg_tokens" in rows else pd.Series(dtype=float)
    tokens = pd.to_numeric(col, errors="coerce").dropna()
    tokens = tokens[tokens > 0]
    if tokens.empty:
        return None
    median = float(tokens.median())
    spread = f", range {tokens.min():,.1f}–{tokens.max():,.1f}" if tokens.nunique() > 1 else ""
    return median, f"median avg_tokens of {len(tokens)} measured row(s){spread}"


def api_cost_per_1b(usd_per_1m_tokens: float, tokens: float) -> float:
    """$ per 1B inputs: tokens × 1e9 inputs ÷ 1e6 tokens per priced unit × $/1M tokens."""
    return tokens * 1e9 / 1e6 * usd_per_1m_tokens


def buy_options(
    task: str,
    model_name: str,
    rows: pd.DataFrame,
    prices: pd.DataFrame,
    *,
    inputs_per_month: float,
    build_cost_per_1b: float,
    build: str,
) -> tuple[list[BuyOption], str | None]:
    """The API prices for one workload (empty, with the reason, where they do not apply)."""
    if task != TASK:
        return [], None
    taken = tokens_per_input(rows)
    if taken is None:
        return (
            [],
            f"{task} · {model_name}: no avg_tokens in its rows, so API prices are not converted",
        )
    tokens, how = taken
    out = []
    for _, p in prices.iterrows():
        tiers = [("standard", p["usd_per_1m_tokens"]), ("batch", p["usd_per_1m_tokens_batch"])]
        for tier, usd in tiers:
            if not (pd.notna(usd) and math.isfinite(float(usd))):
                continue  # the tier is not offered
            cost = api_cost_per_1b(float(usd), tokens)
            out.append(
                BuyOption(
                    task=task,
                    model_name=model_name,
                    provider=str(p["provider"]),
                    api_model=str(p["model"]),
                    tier=tier,
                    usd_per_1m_tokens=float(usd),
                    tokens_per_input=tokens,
                    tokens_from=how,
                    cost_per_1b=cost,
                    monthly_cost=cost * inputs_per_month / 1e9,
                    build_cost_per_1b=build_cost_per_1b,
                    build=build,
                    ratio=cost / build_cost_per_1b,
                    source=str(p["source"]),
                    date=str(p["date"]),
                )
            )
    return out, None
