"""Our own server, `python -m harness.serve`, in a subprocess (a ManagedProcess)."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from engines.processes.base import ManagedProcess

#: the project's root: `python -m harness.serve` runs from here
ROOT = Path(__file__).resolve().parents[2]


class ServerProcess(ManagedProcess):
    """`python -m harness.serve ARGV --port PORT`: ready when /v2/health/ready answers 200."""

    name = "the server"

    def __init__(
        self, argv: list[str], port: int, log_path: str | Path, ready_timeout_s: float = 600.0
    ):
        super().__init__(log_path, ready_timeout_s)
        self.argv = argv
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "harness.serve", *self.argv, "--port", str(self.port)]

    def cwd(self) -> str:
        return str(ROOT)

    def is_ready(self) -> bool:
        with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=1) as r:
            return r.status == 200

    def metrics_text(self) -> str:
        """One scrape of /metrics."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            return r.read().decode()
