"""Where a point's load runs. `LocalLoad` (here) runs it in this process; its twin
`harness.executors.distributed_load.DistributedLoad` runs it on N Ray actors. Both take the same
two calls (`closed`, `open`), so the HTTP sweep does not know where its load runs."""

from __future__ import annotations

from loadgen.loops import LoadResult, run_closed_loop, run_open_loop


class LocalLoad:
    """The load of each point from this process (the default). The other implementation is
    harness.executors.distributed_load.DistributedLoad: the same calls, on N Ray actors."""

    executor = None  # the row keeps the executor's own

    def __init__(self, ceiling: float | None):
        self.ceiling = ceiling

    @property
    def ceilings(self) -> list[float | None]:
        return [self.ceiling]

    @property
    def nodes(self) -> list[str]:
        return []

    def describe(self) -> list[str]:
        if not self.ceiling:
            return []
        return [f"load generator ceiling {self.ceiling:,.0f} req/s (no-op server)"]

    def closed(self, target, workload, vus, iterations, max_duration_s, **kw) -> LoadResult:
        return run_closed_loop(target, workload, vus, iterations, max_duration_s, **kw)

    def open(self, target, workload, rate, duration_s, **kw) -> LoadResult:
        return run_open_loop(target, workload, rate, duration_s, **kw)

    def close(self) -> None:
        return None
