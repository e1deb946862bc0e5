"""Distributed load generation: N load-generator actors, on different Ray nodes, against one URL.

For a target bigger than one client machine (`harness.sweep --url URL --executor ray
--load-workers N`). The sweep itself (its VU search, resume, rows, checks) runs in this process
as with the local executor; only the load of each point is split over the actors. Each actor
measures its own ceiling once, the VUs (or the open-loop rate) of a point are split near
equally, and all actors warm up, then start at one shared wall-clock time. Their raw samples
come back and are merged exactly (loadgen.merge_results): a p99 is the p99 of every
request of every generator.
"""

from __future__ import annotations

import time
from typing import Any

from core.errors import ConfigError, EngineError
from core.sysinfo import host_name
from harness.hardware import ACCELERATORS
from loadgen.ceiling import measure_ceiling
from loadgen.loops import LoadResult, merge_results, run_closed_loop, run_open_loop
from loadgen.protocols import Target
from workloads import Workload

#: seconds the generators may take to be placed and measure their ceilings
PLACE_TIMEOUT_S = 120.0
#: seconds between sending a point to the actors and its shared start (covers the warm-up)
START_MARGIN_S = 2.0


def shares(total: int, n: int) -> list[int]:
    """`total` split over `n` generators as evenly as integers allow (largest first)."""
    return [total // n + (i < total % n) for i in range(n)]


class LoadWorker:
    """One load generator on one node (a Ray actor): its ceiling, then its share of each point."""

    def __init__(self, ceiling_s: float | None):
        import ray

        self.node = ray.get_runtime_context().get_node_id()
        self.ceiling = measure_ceiling(duration_s=ceiling_s) if ceiling_s else None

    def info(self) -> dict[str, Any]:
        return {"node": self.node, "host": host_name(), "ceiling_rps": self.ceiling}

    def closed(self, target: Target, workload: Workload, start_at: float, **kw) -> LoadResult:
        return run_closed_loop(target, workload, ceiling_rps=self.ceiling, start_at=start_at, **kw)

    def open(self, target: Target, workload: Workload, start_at: float, **kw) -> LoadResult:
        return run_open_loop(target, workload, ceiling_rps=self.ceiling, start_at=start_at, **kw)


def place(nodes: list[dict], n: int) -> list[str]:
    """Node ids for `n` generators: distinct alive nodes, CPU-only nodes first (a generator
    should not take an accelerator node's CPUs); with fewer nodes than `n`, round robin."""
    alive = [x for x in nodes if x.get("Alive") and x.get("Resources", {}).get("CPU", 0) >= 1]
    if not alive:
        raise ConfigError("--load-workers: no alive Ray node has a free CPU for a load generator")
    alive.sort(key=lambda x: any(x["Resources"].get(a) for a in ACCELERATORS))
    return [alive[i % len(alive)]["NodeID"] for i in range(n)]


class DistributedLoad:
    """The load of each point, run by `n` actors at once and merged; the same two calls as the
    local load (`closed`, `open`), so the HTTP sweep does not know where its load runs."""

    executor = "ray"

    def __init__(self, ray, n: int, *, ceiling_s: float | None, console):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray = ray
        nodes = place(ray.nodes(), n)
        if len(set(nodes)) < n:
            console.print(
                f"--load-workers {n}: the cluster has {len(set(nodes))} node(s) with a free "
                "CPU; some generators share a node, so their ceilings add up less than they say",
                highlight=False,
            )
        actor = ray.remote(num_cpus=1, max_restarts=0)(LoadWorker)
        self.actors = [
            actor.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
            ).remote(ceiling_s)
            for node in nodes
        ]
        try:
            self.workers: list[dict[str, Any]] = ray.get(
                [a.info.remote() for a in self.actors], timeout=PLACE_TIMEOUT_S
            )
        except ray.exceptions.GetTimeoutError as e:
            self.close()
            raise ConfigError(
                f"--load-workers {n}: the load generators were not placed within "
                f"{PLACE_TIMEOUT_S:.0f} s; each needs one free CPU on its node (free some, or "
                "ask for fewer)"
            ) from e
        self.last: list[dict[str, Any]] = self.workers

    @property
    def ceilings(self) -> list[float | None]:
        return [w["ceiling_rps"] for w in self.last]

    @property
    def nodes(self) -> list[str]:
        """The nodes of the generators that ran the last point."""
        return [w["node"] for w in self.last]

    @property
    def ceiling(self) -> float | None:
        c = [w["ceiling_rps"] for w in self.workers]
        return None if None in c else sum(c)

    def describe(self) -> list[str]:
        out = [f"{len(self.workers)} load generators (Ray actors), started together per point:"]
        for i, w in enumerate(self.workers):
            ceiling = f"ceiling {w['ceiling_rps']:,.0f} req/s" if w["ceiling_rps"] else "no ceiling"
            out.append(f"  generator {i}: node {w['node'][:12]} ({w['host']}) · {ceiling}")
        return out

    def _run(self, method: str, total: int, per_part, target: Target, workload: Workload):
        """Run `method` on the actors that get a share of `total` (VUs or the concurrency cap;
        those left without any sit the point out), from one shared start; merge their runs.
        `per_part(index, share)` gives each part's own keyword arguments."""
        ks = shares(total, len(self.actors))
        used = [i for i, k in enumerate(ks) if k]
        start_at = time.time() + START_MARGIN_S
        wl = self.ray.put(workload)
        refs = [
            getattr(self.actors[i], method).remote(target, wl, start_at, **per_part(i, ks[i]))
            for i in used
        ]
        try:
            parts = self.ray.get(refs)
        except self.ray.exceptions.RayError as e:
            raise EngineError(
                f"a load generator was lost mid-point ({type(e).__name__}); the point is not "
                "measured"
            ) from e
        self.last = [self.workers[i] for i in used]
        return merge_results(parts)

    def closed(
        self,
        target: Target,
        workload: Workload,
        vus: int,
        iterations: int,
        max_duration_s: float,
        *,
        inputs_per_request: int,
        ceiling_rps: float | None = None,
    ) -> LoadResult:
        """k6 shared iterations, the VUs and the iterations split in the same proportion."""

        def part(_: int, k: int) -> dict[str, Any]:
            return dict(
                vus=k,
                iterations=max(1, round(iterations * k / vus)),
                max_duration_s=max_duration_s,
                inputs_per_request=inputs_per_request,
            )

        return self._run("closed", vus, part, target, workload)

    def open(
        self,
        target: Target,
        workload: Workload,
        rate: float,
        duration_s: float,
        *,
        max_concurrency: int,
        inputs_per_request: int,
        ceiling_rps: float | None = None,
    ) -> LoadResult:
        """Poisson arrivals: each generator its share of the rate (independent streams, so
        their sum is Poisson at `rate`) and of the concurrency cap."""

        def part(i: int, k: int) -> dict[str, Any]:
            return dict(
                rate=rate * k / max_concurrency,
                duration_s=duration_s,
                max_concurrency=k,
                inputs_per_request=inputs_per_request,
                seed=i,
            )

        return self._run("open", max_concurrency, part, target, workload)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
