"""The side-by-side table of scripts/bench_peers.sh: per server and load shape, every repeat's
inputs/s and p99, our servers' padding (from /metrics), each server's output quality against
sentence-transformers fp32 (its rows' quality_* columns, else its quality-<shape>.json files),
the mean inputs/s with its 95 % t-interval over the repeats, and the ratio to the fastest
*correct* peer of the same precision with its interval and harness.compare's verdict
(analysis.comparison.judge: faster / slower / no difference at 95 %). A server under the
quality gate, or never checked, is marked and never named best.

    .venv/bin/python scripts/peers_table.py results/cpu-peers
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.comparison import THROUGHPUT, judge
from core.stats import finite, t_interval


def metric(path: Path, name: str) -> float | None:
    if not path.exists():
        return None
    m = re.search(rf"^{name} (\S+)$", path.read_text(), re.M)
    return float(m.group(1)) if m else None


def precision_of(name: str) -> str:
    """Server names carry their precision (bench_peers.sh serve_cmd): int8 or else fp32."""
    return "int8" if "int8" in name else "fp32"


def is_ours(name: str) -> bool:
    return name.startswith("ours")


@dataclass
class Check:
    n: int
    min_cosine: float | None
    mean_cosine: float | None
    passed: bool


def _num(v) -> float | None:
    return finite(v)


def row_quality(row: dict, qfile: Path) -> Check | None:
    """The point's quality: its row's columns, else the combined check of its JSON."""
    n = _num(row.get("quality_n"))
    if n is not None:
        passed = row.get("quality_passed")
        return Check(
            int(n),
            _num(row.get("quality_min_cosine")),
            _num(row.get("quality_mean_cosine")),
            passed is True or str(passed).lower() in ("true", "1", "1.0"),
        )
    if qfile.exists():
        c = json.loads(qfile.read_text()).get("combined")
        if c:
            return Check(c["n"], c["min_cosine"], c["mean_cosine"], bool(c["passed"]))
    return None


@dataclass
class Server:
    name: str
    vus: int
    ipr: int
    thr: list[float]
    p99: list[float]
    pads: list[float]
    checks: list[Check | None]

    @property
    def mean(self) -> float:
        return statistics.mean(self.thr)

    @property
    def interval(self):
        return t_interval(self.thr)

    def interval_cell(self) -> str:
        ci = self.interval
        if not math.isfinite(ci.low):
            return f"{ci.mean:.1f} (1 repeat: no interval)"
        return f"{ci.mean:.1f} [{ci.low:.1f}, {ci.high:.1f}]"

    def versus(self, peer: Server | None) -> str:
        """B = this server, A = the peer: the ratio with its interval and the verdict."""
        if peer is None:
            return "-"
        if peer is self:
            return "1 (the peer)"
        failing = () if self.correct else ("this server",)
        ratio, verdict, _ = judge(THROUGHPUT, peer.interval, self.interval, failing)
        if not math.isfinite(ratio.low):
            return f"{ratio.mean:.2f}, {verdict}"
        return f"{ratio.mean:.2f} [{ratio.low:.2f}, {ratio.high:.2f}], {verdict}"

    @property
    def checked(self) -> bool:
        return bool(self.checks) and all(c is not None for c in self.checks)

    @property
    def correct(self) -> bool:
        return self.checked and all(c.passed for c in self.checks)

    def quality_cells(self) -> tuple[str, str, str]:
        if not self.checked:
            return "-", "-", "not checked"
        mins = [c.min_cosine for c in self.checks]
        means = [c.mean_cosine for c in self.checks]
        lo = "-" if None in mins else f"{min(mins):.5f}"
        mean = "-" if None in means else f"{statistics.mean(means):.5f}"
        return lo, mean, "yes" if self.correct else "**FAILING QUALITY**"


def load(out: Path) -> dict[tuple[str, int, int], Server]:
    servers: dict[tuple[str, int, int], Server] = {}
    rows_by: dict[tuple[str, int, int], list] = defaultdict(list)
    for csv in sorted(out.glob("*-rep*/results.csv")):
        name, rep = csv.parent.name.rsplit("-rep", 1)
        for r in pd.read_csv(csv).to_dict("records"):
            vus, ipr = int(r["vus"]), int(r["inputs_per_request"])
            met = out / f"metrics-{name}-{vus}x{ipr}-rep{rep}.txt"
            useful = metric(met, "bb_useful_tokens_total")
            padded = metric(met, "bb_padded_tokens_total")
            pad = 1 - useful / padded if useful and padded else None
            check = row_quality(r, csv.parent / f"quality-{vus}x{ipr}.json")
            rows_by[(name, vus, ipr)].append((r, pad, check))
    for key, rows in rows_by.items():
        servers[key] = Server(
            key[0],
            key[1],
            key[2],
            [r["throughput_req_per_sec"] for r, _, _ in rows],
            [r["p99_latency_ms"] for r, _, _ in rows],
            [p for _, p, _ in rows if p is not None],
            [c for _, _, c in rows],
        )
    return servers


def best_peer(servers, vus: int, ipr: int, precision: str | None) -> Server | None:
    """The fastest correct peer at this load shape (and precision, when given)."""
    cands = [
        s
        for s in servers.values()
        if (s.vus, s.ipr) == (vus, ipr)
        and not is_ours(s.name)
        and s.correct
        and (precision is None or precision_of(s.name) == precision)
    ]
    return max(cands, key=lambda s: s.mean, default=None)


def main(out: Path) -> int:
    servers = load(out)
    print(
        "| server | precision | load shape | inputs/s (each repeat) | mean [95 % CI] | × fastest "
        "correct peer, same precision [95 % CI], verdict | p99 ms (each) | padding | min cosine "
        "| mean cosine | quality |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    order = sorted(servers.values(), key=lambda s: (-s.vus, s.ipr, not is_ours(s.name), s.name))
    for s in order:
        prec = precision_of(s.name)
        peer = best_peer(servers, s.vus, s.ipr, prec)
        ratio = s.versus(peer)
        pad = f"{statistics.mean(s.pads):.3f}" if s.pads else "-"
        thr = ", ".join(f"{t:.1f}" for t in s.thr)
        p99 = ", ".join(f"{p:,.0f}" for p in s.p99)
        lo, mean, verdict = s.quality_cells()
        name = (
            s.name
            if s.correct
            else f"{s.name} ({'FAILING QUALITY' if s.checked else 'not checked'})"
        )
        print(
            f"| {name} | {prec} | {s.vus} VUs × {s.ipr} | {thr} | {s.interval_cell()} | {ratio} "
            f"| {p99} | {pad} "
            f"| {lo} | {mean} | {verdict} |"
        )
    print()
    shapes = sorted({(s.vus, s.ipr) for s in servers.values()}, key=lambda k: (-k[0], k[1]))
    for vus, ipr in shapes:
        for prec in ("fp32", "int8"):
            peer = best_peer(servers, vus, ipr, prec)
            ours = [
                s
                for s in servers.values()
                if (s.vus, s.ipr) == (vus, ipr) and is_ours(s.name) and precision_of(s.name) == prec
            ]
            if not ours and peer is None:
                continue
            best_ours = max((s for s in ours if s.correct), key=lambda s: s.mean, default=None)
            line = f"- {vus} VUs × {ipr}, {prec}: "
            if peer:
                line += f"fastest correct peer **{peer.name}** ({peer.mean:.1f} inputs/s)"
            else:
                anyp = best_peer(servers, vus, ipr, None)
                line += f"no {prec} peer configuration checked and passing the quality gate"
                if anyp:
                    line += (
                        f" (fastest correct peer at any precision: {anyp.name}, "
                        f"{anyp.mean:.1f} inputs/s"
                    )
                    if best_ours:
                        line += f"; {best_ours.name}: {best_ours.versus(anyp)}"
                    line += ")"
            if best_ours:
                line += f"; ours best correct: **{best_ours.name}** ({best_ours.mean:.1f} inputs/s"
                line += f", {best_ours.versus(peer)} against the peer)" if peer else ")"
            elif ours:
                line += f"; no {prec} configuration of ours checked and passing the quality gate"
            failing = sorted(
                s.name
                for s in servers.values()
                if (s.vus, s.ipr) == (vus, ipr)
                and precision_of(s.name) == prec
                and s.checked
                and not s.correct
            )
            if failing:
                line += f"; FAILING QUALITY: {', '.join(failing)}"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/cpu-peers")))
