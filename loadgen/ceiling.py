"""The load generator's own ceiling: requests/s it reaches against a no-op server.

A run that comes within 50% of it warns that the client, not the server, may be the limit.
"""

from __future__ import annotations

import logging

import numpy as np

from core.processes.noop_server import NoopServer
from loadgen.loops import run_closed_loop
from loadgen.protocols import Target
from workloads import Workload

log = logging.getLogger(__name__)


def measure_ceiling(duration_s: float = 3.0, vus: int = 32, inputs_per_request: int = 1) -> float:
    """Requests/s this load generator reaches against a no-op aiohttp server (a child process)."""
    with NoopServer() as url:
        target = Target(url, protocol="noop", timeout_s=10.0)
        workload = Workload(["ceiling"], None, np.ones(1, dtype=np.int64), "noop")
        res = run_closed_loop(
            target,
            workload,
            vus,
            iterations=10**9,
            max_duration_s=duration_s,
            inputs_per_request=inputs_per_request,
        )
    log.info(
        "load generator ceiling: %.0f req/s (%d VUs, client CPU %.0f%%)",
        res.requests_per_sec,
        vus,
        res.client_cpu_percent or 0.0,
    )
    return res.requests_per_sec
