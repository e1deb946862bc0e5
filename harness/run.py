"""`python -m harness.run`: benchmark one model x engine x hardware in process (neuronperf-style).

Sweeps batch sizes x n_models x workers_per_model, appends one result row per configuration to
`<output-dir>/results.{csv,parquet}` as soon as it is measured, and prints seed 002's table with
$/1M, $/1B and the roofline floor. Re-running the same command resumes where it stopped.
`--load perf_analyzer` drives a Triton ensemble with NVIDIA's perf_analyzer instead.
"""

from __future__ import annotations

import argparse
import sys

from harness import cli, runner
from harness.executors.ray_cluster import run_on_ray
from harness.scenarios.inprocess import InprocessScenario
from harness.scenarios.perf_analyzer import PerfAnalyzerScenario
from harness.setup import load_setup


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(
        prog="harness.run",
        description="Benchmark an encoder in process (model copies x worker threads x batch "
        "sizes) and report p50/p99 latency, throughput and $ per 1M / 1B inputs.",
    )
    cli.add_common_args(p)
    cli.add_workload_args(p)
    cli.add_flags(
        p,
        "sweep (neuronperf-style)",
        """
        --batch-sizes       | int_list       | 1,8,32    | comma-separated
        --n-models          | int_list       | 1         | model copies, comma-separated
        --workers-per-model | int_list       | 1         | threads feeding each copy, comma-separated
        --processes         | flag           |           | run model copies as processes instead of threads
        --duration          | positive_float | 5.0       | minimum timed seconds per configuration
        --min-calls         | int            | 10        | minimum timed calls per configuration (both minima must be met)
        --warmup            | int            | 2         | untimed warm-up calls per model copy
        --load              | choice:inprocess,perf_analyzer | inprocess | perf_analyzer (with --engine triton): drive the ensemble with NVIDIA's perf_analyzer over --concurrency, after checking a sample of responses ourselves
        --concurrency       | int_list       | 1,2,4,8   | perf_analyzer concurrencies
        --max-duration      | positive_float |           | hard stop per configuration (default 10 x duration + 120 s)
        """,
    )
    cli.add_executor_args(p)
    cli.add_output_args(p)
    return p


def build_scenario(args: argparse.Namespace, console) -> runner.Scenario:
    """Flags -> the scenario to measure, on the machine that measures it (here, or a node)."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    setup = load_setup(args)
    kind = PerfAnalyzerScenario if args.load == "perf_analyzer" else InprocessScenario
    return kind(args, setup, console)


def _run(args: argparse.Namespace, console) -> int:
    if args.executor == "ray":
        return run_on_ray(args, console, build_scenario)
    cli.require_single_targets(args)
    return runner.run_command_scenario(args, console, "harness.run", build_scenario)


def main(argv: list[str] | None = None) -> int:
    return cli.run_command(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
