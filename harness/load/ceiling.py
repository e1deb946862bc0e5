"""The load generator's own ceiling: requests/s it reaches against a no-op server.

A run that comes within 50% of it warns that the client, not the server, may be the limit.
"""

from __future__ import annotations

import logging
import select
import subprocess
import sys

import numpy as np

from engines.errors import BillionbenchError
from harness.load.loops import run_closed_loop
from harness.load.protocols import Target
from harness.workloads import Workload

log = logging.getLogger(__name__)

_NOOP_SERVER = """
import socket, sys
from aiohttp import web

async def noop(request):
    await request.read()
    return web.Response(body=b"{}", content_type="application/json")

app = web.Application()
app.router.add_route("*", "/{tail:.*}", noop)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(1024)  # connections queue from now on, so the port can be printed right away
print(sock.getsockname()[1], flush=True)
try:
    import uvloop
    loop = uvloop.new_event_loop()
except ImportError:
    import asyncio
    loop = asyncio.new_event_loop()
web.run_app(app, sock=sock, print=None, access_log=None, loop=loop, backlog=1024)
"""


def measure_ceiling(duration_s: float = 3.0, vus: int = 32, inputs_per_request: int = 1) -> float:
    """Requests/s this load generator reaches against a no-op aiohttp server in a subprocess."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _NOOP_SERVER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            err = proc.stderr.read() if proc.poll() is not None else "no port printed in 30 s"
            raise BillionbenchError(f"the no-op server did not start: {err.strip()[-300:]}")
        target = Target(f"http://127.0.0.1:{int(line)}", protocol="noop", timeout_s=10.0)
        workload = Workload(["ceiling"], None, np.ones(1, dtype=np.int64), "noop")
        res = run_closed_loop(
            target,
            workload,
            vus,
            iterations=10**9,
            max_duration_s=duration_s,
            inputs_per_request=inputs_per_request,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.info(
        "load generator ceiling: %.0f req/s (%d VUs, client CPU %.0f%%)",
        res.requests_per_sec,
        vus,
        res.client_cpu_percent or 0.0,
    )
    return res.requests_per_sec
