"""Where points run. `local` (harness.runner.LocalExecutor) measures in this process; `ray`
(harness.executors.ray_cluster.RayExecutor) measures on a Ray cluster. Either way the runner's
one loop plans, resumes and writes the rows, in this process.

Ray is imported only by the modules that need it, and only when `--executor ray` is used.
"""

from __future__ import annotations

from collections.abc import Callable

from harness import runner
from harness.config import ExecutorConfig, OutputConfig, TargetConfig
from harness.executors import ray_cluster
from harness.runner import LocalExecutor

#: builds a target's scenario on the machine that measures it: picklable, for cluster nodes
Build = Callable[[TargetConfig, object], runner.Scenario]


def launch(
    build: Build,
    target: TargetConfig,
    executor: ExecutorConfig,
    output: OutputConfig,
    console,
    title: str,
) -> int:
    """Run a command's scenarios where `executor` says: one target here, or every target the
    comma lists name on a Ray cluster."""
    if executor.executor == "ray":
        return ray_cluster.launch(build, target, executor, output, console, title)
    target.require_single()
    return runner.run_command(
        output, console, title, lambda: ([build(target, console)], LocalExecutor())
    )


__all__ = ["Build", "LocalExecutor", "launch"]
