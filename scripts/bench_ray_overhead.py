"""The Ray executor's overhead, and one load generator against two (docs/cluster/overhead.md).

1. The same in-process sweep (full-size DistilBERT, random weights, eager, CPU) with the local
   executor and with `--executor ray` on a local Ray cluster started by the command itself:
   per-point throughput, and the command's wall time (the difference is Ray's start-up and
   scheduling).
2. `harness.sweep --url` against one of our servers (the tiny classifier) with
   `--load-workers 1` and `--load-workers 2` on a two-node Ray cluster on this machine.

    .venv/bin/python scripts/bench_ray_overhead.py [OUT] [all|executors|load]
    # default: results/cpu-ray, all
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
OUT = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "results" / "cpu-ray")

SWEEP = [
    "--task", "classification", "--model", "distilbert-sentiment", "--weights", "random",
    "--engine", "eager", "--hw", "cpu", "--inputs-per-request", "1,8,32", "--duration", "10",
]  # fmt: skip
LOAD = [
    "--model", "distilbert-sentiment-tiny", "--weights", "random", "--dataset", "synthetic",
    "--num-samples", "256", "--max-batch-sizes", "8", "--vus-start", "16", "--vus-max", "16",
    "--repeats", "3", "--iterations", "100000", "--max-duration", "10",
]  # fmt: skip


def timed(argv: list[str], log: Path) -> float:
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t0


def executors() -> dict[str, float]:
    """Local, Ray, then Ray, local: alternating, so the run-to-run noise shows."""
    walls = {}
    order = [("local", 1), ("ray", 1), ("ray", 2), ("local", 2)]
    for name, run in order:
        extra = ["--executor", "ray"] if name == "ray" else []
        out = OUT / f"inprocess-{name}-run{run}"
        argv = [PY, "-m", "harness.run", *SWEEP, *extra, "--fresh", "--output-dir", str(out)]
        walls[f"{name}-run{run}"] = timed(argv, out / "run.log")
    return walls


def load_workers() -> None:
    import ray
    from ray.cluster_utils import Cluster

    from core.processes.bench_server import ServerProcess
    from harness import sweep
    from harness.config import serve_command

    server = ServerProcess(
        serve_command(
            "--engine", "eager", "--model", "distilbert-sentiment-tiny", "--weights", "random"
        ),
        18777,
        OUT / "logs" / "serve-tiny.log",
    )
    server.start()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        for i, n in enumerate((1, 2, 1, 2)):  # alternating, each run in its own folder
            out = OUT / f"load-workers-{n}-run{i // 2 + 1}"
            argv = [*LOAD, "--url", server.url, "--executor", "ray", "--ray-address", c.address]
            argv += ["--load-workers", str(n), "--fresh", "--output-dir", str(out)]
            assert sweep.main(argv) == 0
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
        server.stop()


def main() -> int:
    part = sys.argv[2] if len(sys.argv) > 2 else "all"
    OUT.mkdir(parents=True, exist_ok=True)
    if part in ("all", "executors"):
        walls = executors()
        (OUT / "walls.json").write_text(json.dumps(walls, indent=1))
        print("command wall time (s):", walls)
    if part in ("all", "load"):
        load_workers()
    return 0


if __name__ == "__main__":
    sys.exit(main())
