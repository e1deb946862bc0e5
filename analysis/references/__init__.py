"""Published figures (reference rows) in the result schema, each with its source.

`published.csv` holds figures from the seeds, AWS's Neuron docs and NVIDIA's TensorRT demoBERT,
as published (every derived column says how it was derived). They are never measurements: they
carry `measured_here = false`, and the planner and report use them only when asked
(`--references`), always marked as published. `analysis.frames.read_references`
reads them.
"""

from __future__ import annotations

from pathlib import Path

PUBLISHED = Path(__file__).with_name("published.csv")
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
