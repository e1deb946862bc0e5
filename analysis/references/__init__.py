"""Published figures (reference rows) in the result schema, each with its source.

`published.csv` holds figures from the seeds, AWS's Neuron docs and NVIDIA's TensorRT demoBERT,
as published (every derived column says how it was derived). They are never measurements: they
carry `measured_here = false`, and the planner and report use them only when asked
(`--references`), always marked as published. `analysis.frames.read_references`
reads them. `api_prices.csv` holds embedding API list prices, which the plan shows as "buy"
rows beside the measured "build" answer (`analysis.buy`).
"""

from __future__ import annotations

from pathlib import Path

PUBLISHED = Path(__file__).with_name("published.csv")
#: embedding API list prices (the "buy" side of the plan): provider, model, $/1M tokens
#: (standard, and batch where offered), source and date; never a measurement
API_PRICES = Path(__file__).with_name("api_prices.csv")
API_PRICE_COLUMNS = (
    "provider",
    "model",
    "usd_per_1m_tokens",
    "usd_per_1m_tokens_batch",
    "source",
    "date",
)
#: columns a reference row has beyond the result schema
EXTRA_COLUMNS = (
    "reference_id",
    "source",
    "measured_here",
    "price_basis",
    "measurement_boundary",
    "derivation",
)
#: the marker every table and chart puts on a reference row
MARKER = "◇ published"
#: the marker every plan table puts on an API price row (bought, never measured or ranked)
BUY_MARKER = "◇ buy"
