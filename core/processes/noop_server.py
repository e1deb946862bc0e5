"""A no-op HTTP server in a child process: the load generator measures its own ceiling on it."""

from __future__ import annotations

import select
import sys

from core.errors import BillionbenchError
from core.processes.base import PipedProcess

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


class NoopServer:
    """`with NoopServer() as url:` an aiohttp server answering `{}` to every request."""

    def __init__(self, ready_timeout_s: float = 30.0):
        self.ready_timeout_s = ready_timeout_s
        self._child = PipedProcess([sys.executable, "-c", _NOOP_SERVER], keep_stderr=True)

    def __enter__(self) -> str:
        self._child.start()
        try:
            ready, _, _ = select.select([self._child.stdout], [], [], self.ready_timeout_s)
            line = self._child.stdout.readline() if ready else ""
            if not line.strip().isdigit():
                err = self._child.stderr_text() or f"no port printed in {self.ready_timeout_s:g} s"
                raise BillionbenchError(f"the no-op server did not start: {err.strip()[-300:]}")
        except BaseException:
            self._child.stop()
            raise
        return f"http://127.0.0.1:{int(line)}"

    def __exit__(self, *exc: object) -> None:
        self._child.stop()
