"""What an endpoint says about itself: the provenance at /v2/models/<name>, and the padding and
CPU split a point cost, from /metrics before and after it (our server's counters)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from core import contract as metrics
from core.contract import total


def counters(text: str) -> dict[str, float]:
    """Every unlabelled sample of a Prometheus text exposition, by name."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name and not name.startswith("#") and "{" not in name:
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def server_columns(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """A point's padding ratio and non-forward CPU share, from /metrics before and after it."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    useful, padded = delta(total(metrics.USEFUL_TOKENS)), delta(total(metrics.PADDED_TOKENS))
    fwd = delta(total(metrics.FORWARD_CPU_SECONDS))
    other = delta(total(metrics.NONFORWARD_CPU_SECONDS))
    return {
        "padding_ratio": 1 - useful / padded if padded > 0 else None,
        "non_forward_cpu_share": other / (fwd + other) if fwd + other > 0 else None,
        "server_cpu_s": fwd + other if total(metrics.FORWARD_CPU_SECONDS) in after else None,
    }


def remote_parameters(url: str, model: str) -> dict[str, Any]:
    """The provenance a KServe v2 server gives at /v2/models/<model> (ours: engine, precision,
    weights ...); {} when the endpoint has none (Infinity, TEI, a Triton without them)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/v2/models/{model}", timeout=5) as r:
            meta = json.loads(r.read())
    except (OSError, ValueError):
        return {}
    params = meta.get("parameters") if isinstance(meta, dict) else None
    return params if isinstance(params, dict) else {}


def remote_identity(info: dict[str, Any], protocol: str) -> dict[str, Any]:
    """A --url row's engine columns: what the server reported, else `remote` (never the
    engine flags of the command that drove it)."""
    engine = info.get("engine")
    if not isinstance(engine, str) or not engine:
        return {"engine": "remote", "precision": None, "attn": None, "image": f"remote/{protocol}"}
    parts = (engine, info.get("precision"), info.get("variant"), info.get("attn"))
    return {
        "engine": engine,
        "precision": info.get("precision"),
        "image": "/".join(str(x) for x in parts if x),
    }
