"""Where points run. `local` (harness.runner.LocalExecutor) measures in this process; `ray`
(harness.executors.ray_cluster) measures on a Ray cluster, with this process as the only writer.

Ray is imported only by the modules that need it, and only when `--executor ray` is used.
"""

from harness.runner import LocalExecutor

__all__ = ["LocalExecutor"]
