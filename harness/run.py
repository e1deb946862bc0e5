"""`python -m harness.run`: benchmark one model x engine x hardware in process (neuronperf-style).

Sweeps inputs per call x n_models x workers_per_model, appends one result row per configuration
to `<output-dir>/results.{csv,parquet}` as soon as it is measured, and prints the table
with latency, inputs/s, $/1M, $/1B and the roofline floor. Re-running the same command resumes where it stopped.
`--scenario offline` runs the workload as one batch job instead (length-sorted batches under a
token budget, tokenization on its own thread, outputs in input order: one row per count cap);
`--load perf_analyzer` drives a Triton ensemble with NVIDIA's perf_analyzer instead.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from core.config import config_from
from core.errors import ConfigError
from harness import cli, runner
from harness.config import (
    OutputConfig,
    TargetConfig,
    benchmark_flags,
    executor_from,
    target_from,
)
from harness.executors.ray_cluster import launcher
from harness.scenarios.inprocess import InprocessConfig, InprocessScenario
from harness.scenarios.offline import OfflineConfig, OfflineScenario, check_grid
from harness.scenarios.perf_analyzer_load import PerfAnalyzerConfig, PerfAnalyzerScenario
from harness.target import load_setup
from workloads import WorkloadSpec

LOADS = ("inprocess", "perf_analyzer")
SCENARIOS = ("inprocess", "offline")


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(
        prog="harness.run",
        description="Benchmark an encoder in process (model copies x worker threads x inputs "
        "per call) and report p50/p99 latency, throughput and $ per 1M / 1B inputs.",
    )
    benchmark_flags(
        p,
        (WorkloadSpec, "workload"),
        (InprocessConfig, "sweep (neuronperf-style)"),
        (OfflineConfig, "offline job (--scenario offline)"),
        (PerfAnalyzerConfig, "perf_analyzer (--load perf_analyzer)"),
    )
    p.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="inprocess",
        help="inprocess: the fixed-batch grid (inputs per call x copies x workers, in arrival "
        "order); offline: the workload as one batch job (sorted by length into batches capped "
        "by each --inputs-per-request value and --max-batch-tokens, tokenized on its own "
        "thread, outputs in input order; one row per cap)",
    )
    p.add_argument(
        "--load",
        choices=LOADS,
        default="inprocess",
        help="perf_analyzer (with --engine triton): drive the ensemble with NVIDIA's "
        "perf_analyzer over --concurrency, after checking a sample of responses ourselves",
    )
    return p


@dataclass(frozen=True)
class Build:
    """What a machine builds a target's scenario from (here, or on a cluster node): picklable."""

    workload: WorkloadSpec
    inprocess: InprocessConfig
    perf_analyzer: PerfAnalyzerConfig | None = None  # --load perf_analyzer
    offline: OfflineConfig | None = None  # --scenario offline

    def __call__(self, target: TargetConfig, console) -> runner.Scenario:
        if target.threads:
            import torch

            torch.set_num_threads(target.threads)
        setup = load_setup(target, self.workload)
        if self.perf_analyzer is not None:
            return PerfAnalyzerScenario(self.perf_analyzer, setup, console)
        if self.offline is not None:
            return OfflineScenario(self.offline, self.inprocess, setup, console)
        return InprocessScenario(self.inprocess, setup, console)


def _run(ns: argparse.Namespace, console) -> int:
    perf = config_from(PerfAnalyzerConfig, ns) if ns.load == "perf_analyzer" else None
    offline = config_from(OfflineConfig, ns) if ns.scenario == "offline" else None
    if perf is not None and offline is not None:
        raise ConfigError("--scenario offline runs in process; drop --load perf_analyzer")
    grid = config_from(InprocessConfig, ns)
    if offline is not None:
        check_grid(grid)
    build = Build(config_from(WorkloadSpec, ns), grid, perf, offline)
    target, output = target_from(ns), config_from(OutputConfig, ns)
    executor = executor_from(ns)
    return launcher(executor)(build, target, executor, output, console, "python -m harness.run")


def main(argv: list[str] | None = None) -> int:
    return cli.command_main(build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
