"""The side-by-side table of scripts/bench_peers.sh: per server and load shape, every repeat's
inputs/s and p99, the mean ratio to Infinity, and our servers' padding (from /metrics).

    .venv/bin/python scripts/peers_table.py results/cpu-peers
"""

from __future__ import annotations

import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd


def metric(path: Path, name: str) -> float | None:
    if not path.exists():
        return None
    m = re.search(rf"^{name} (\S+)$", path.read_text(), re.M)
    return float(m.group(1)) if m else None


def main(out: Path) -> int:
    runs: dict[tuple[str, int, int], list[dict]] = defaultdict(list)
    for csv in sorted(out.glob("*-rep*/results.csv")):
        name, rep = csv.parent.name.rsplit("-rep", 1)
        for r in pd.read_csv(csv).to_dict("records"):
            shape = (name, int(r["vus"]), int(r["inputs_per_request"]))
            met = out / f"metrics-{name}-{shape[1]}x{shape[2]}-rep{rep}.txt"
            useful = metric(met, "bb_useful_tokens_total")
            padded = metric(met, "bb_padded_tokens_total")
            r["padding"] = 1 - useful / padded if useful and padded else None
            runs[shape].append(r)
    print(
        "| server | load shape | inputs/s (each repeat) | × Infinity (means) | p99 ms (each) "
        "| padding |"
    )
    print("|---|---|---|---|---|---|")
    for (name, vus, ipr), rows in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        thr = [r["throughput_req_per_sec"] for r in rows]
        peer = runs.get(("infinity", vus, ipr))
        ratio = (
            f"{statistics.mean(thr) / statistics.mean(p['throughput_req_per_sec'] for p in peer):.2f}"
            if peer
            else "-"
        )
        pads = [r["padding"] for r in rows if r["padding"] is not None]
        pad = f"{statistics.mean(pads):.3f}" if pads else "-"
        p99 = ", ".join(f"{r['p99_latency_ms']:,.0f}" for r in rows)
        thr_s = ", ".join(f"{t:.1f}" for t in thr)
        print(f"| {name} | {vus} VUs × {ipr} | {thr_s} | {ratio} | {p99} | {pad} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/cpu-peers")))
