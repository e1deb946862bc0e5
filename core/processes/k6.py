"""Grafana k6, the load generator binary: found on PATH, run to completion."""

from __future__ import annotations

import shutil

from core.environment import child_env
from core.processes.base import capture


def k6_binary() -> str | None:
    return shutil.which("k6")


def run_k6_binary(argv: list[str], timeout_s: float) -> tuple[int, str, str] | None:
    """One `k6 run …` with usage reports off: (exit code, stdout, stderr), None if it can't start."""
    return capture(argv, env=child_env(K6_NO_USAGE_REPORT="true"), timeout_s=timeout_s)
