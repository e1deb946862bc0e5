"""Where points run. `local` (harness.runner.LocalExecutor, through `runner.run_local`) measures
in this process; `ray` (`ray_cluster.launch`, RayExecutor) measures on a Ray cluster. Either
way the runner's one loop plans, resumes and writes the rows, in this process; a command picks
one with `ray_cluster.launcher(config)`.

Ray is imported only by the modules that need it, and only when `--executor ray` is used.
"""
