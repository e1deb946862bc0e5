"""`python -m harness.run`: benchmark one model x engine x hardware in process (neuronperf-style).

Sweeps batch sizes x n_models x workers_per_model, appends one result row per configuration to
`<output-dir>/results.{csv,parquet}` as soon as it is measured, and prints seed 002's table with
$/1M, $/1B and the roofline floor. Re-running the same command resumes where it stopped.
`--load perf_analyzer` drives a Triton ensemble with NVIDIA's perf_analyzer instead.
"""

from __future__ import annotations

import argparse
import sys

from harness import runner
from harness.cli import (
    Parser,
    add_common_args,
    add_executor_args,
    add_output_args,
    add_workload_args,
    int_list,
    positive_float,
    require_single_targets,
    run_command,
)
from harness.executors.ray_cluster import run_on_ray
from harness.scenarios.inprocess import InprocessScenario
from harness.scenarios.perf_analyzer import PerfAnalyzerScenario
from harness.setup import load_setup


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="harness.run",
        description="Benchmark an encoder in process (model copies x worker threads x batch "
        "sizes) and report p50/p99 latency, throughput and $ per 1M / 1B inputs.",
    )
    add_common_args(p)
    add_workload_args(p)
    g = p.add_argument_group("sweep (neuronperf-style)")
    g.add_argument("--batch-sizes", type=int_list, default=[1, 8, 32], help="comma-separated")
    g.add_argument("--n-models", type=int_list, default=[1], help="model copies, comma-separated")
    g.add_argument(
        "--workers-per-model",
        type=int_list,
        default=[1],
        help="threads feeding each copy, comma-separated",
    )
    g.add_argument(
        "--processes", action="store_true", help="run model copies as processes instead of threads"
    )
    g.add_argument(
        "--duration",
        type=positive_float,
        default=5.0,
        help="minimum timed seconds per configuration",
    )
    g.add_argument(
        "--min-calls",
        type=int,
        default=10,
        help="minimum timed calls per configuration (both minima must be met)",
    )
    g.add_argument("--warmup", type=int, default=2, help="untimed warm-up calls per model copy")
    g.add_argument(
        "--load",
        choices=("inprocess", "perf_analyzer"),
        default="inprocess",
        help="perf_analyzer (with --engine triton): drive the ensemble with NVIDIA's "
        "perf_analyzer over --concurrency, after checking a sample of responses ourselves",
    )
    g.add_argument(
        "--concurrency", type=int_list, default=[1, 2, 4, 8], help="perf_analyzer concurrencies"
    )
    g.add_argument(
        "--max-duration",
        type=positive_float,
        default=None,
        help="hard stop per configuration (default 10 x duration + 120 s)",
    )
    add_executor_args(p)
    add_output_args(p)
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
    require_single_targets(args)
    scenario = build_scenario(args, console)
    runner.run(scenario, output_dir=args.output_dir, resume=args.resume, console=console)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
