"""Our own server in a subprocess (a ManagedProcess): the caller gives its command line."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from core.processes.base import ManagedProcess


class ServerProcess(ManagedProcess):
    """`COMMAND --port PORT` (the harness builds COMMAND: `harness.config.serve_command`),
    ready when /v2/health/ready answers 200; run from `cwd` when given."""

    name = "the server"

    def __init__(
        self,
        command: list[str],
        port: int,
        log_path: str | Path,
        ready_timeout_s: float = 600.0,
        cwd: str | None = None,
    ):
        super().__init__(log_path, ready_timeout_s)
        self.argv = list(command)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._cwd = cwd

    def command(self) -> list[str]:
        return [*self.argv, "--port", str(self.port)]

    def cwd(self) -> str | None:
        return self._cwd

    def is_ready(self) -> bool:
        with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=1) as r:
            return r.status == 200

    def metrics_text(self) -> str:
        """One scrape of /metrics."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            return r.read().decode()
