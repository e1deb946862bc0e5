"""`python -m harness.sweep`: seed 000's HTTP sweep, with its VU search fixed.

For each server batch size x inputs per request it starts `harness.serve` (or targets `--url`),
doubles the VUs while throughput improves by more than the noise margin, then binary-searches
between the last two points. Every measured point is a result row (`mode=http`), appended at
once and skipped on resume. The best point is always one that was measured; the noise margin
is max(--improvement, the spread of repeated measurements). Against a Triton engine it runs
Model Analyzer's config search through a real tritonserver instead.
"""

from __future__ import annotations

import argparse
import sys

from harness import cli, runner
from harness.executors.ray_cluster import run_on_ray
from harness.scenarios.http import HttpScenario
from harness.scenarios.triton import TritonScenario
from harness.setup import load_setup

# how to sweep an engine, by the kind of server it is a client of (None: ours)
SCENARIOS = {None: HttpScenario, "triton": TritonScenario}


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog="harness.sweep", description=__doc__)
    cli.add_common_args(p)
    cli.add_batcher_args(p)
    cli.add_workload_args(p)
    cli.add_flags(
        p,
        "sweep",
        """
        --batch-sizes        | int_list       | 8,32      | server max batch sizes, one server start each
        --inputs-per-request | int_list       | 1         | client batch (inputs per HTTP request), comma-separated
        --vus-start          | int            | 1         |
        --vus-max            | int            | 32        |
        --iterations         | int            | 200       | k6 shared iterations per point
        --max-duration       | positive_float | 10.0      | seconds per point (k6 maxDuration)
        --repeats            | int            | 2         | runs per point; gives the noise margin
        --improvement        | float          | 0.02      | keep doubling VUs while throughput improves by more than this
        --max-p95-ms         | positive_float |           |
        --max-p99-ms         | positive_float |           |
        --url                | str            |           | benchmark this server instead of starting ours
        --protocol           | choice:kserve,triton,kserve-grpc,openai,classify,hf | kserve | kserve-grpc: KServe v2 over gRPC (--url host:port, or our server started with a gRPC port)
        --served-model       | str            |           | model name on the target (default: the registry name)
        --no-ceiling         | flag           |           | skip measuring the load generator's own ceiling
        --rate               | positive_float |           | open loop instead of the VU search: Poisson arrivals at this many requests/s for --max-duration, at most --vus-max in flight; latency counts from the scheduled send
        """,
    )
    cli.add_flags(
        p,
        "triton (--engine triton: Model Analyzer-style search through a real tritonserver)",
        """
        --search          | str      | instances,max_batch,delay | dimensions to search (others keep their first value): instances, max_batch, delay
        --instances       | int_list | 1,2,4   | instance_group counts
        --max-batch       | int_list | 1,8,32  | encoder max_batch_size values
        --queue-delays-us | str      | off,500 | dynamic batching: 'off', or on with this max_queue_delay_microseconds
        --concurrency     | int_list | 1,8,32  | concurrent clients per config
        """,
    )
    cli.add_executor_args(p)
    cli.add_output_args(p)
    return p


def _sweep(args: argparse.Namespace, console) -> int:
    if args.executor == "ray":
        return run_on_ray(args, console, build_scenario)
    cli.require_single_targets(args)
    return runner.run_command_scenario(args, console, "harness.sweep", build_scenario)


def build_scenario(args: argparse.Namespace, console) -> runner.Scenario:
    """Flags -> the sweep to run, on the machine that runs it (here, or a node)."""
    setup = load_setup(args)
    return SCENARIOS[setup.engine_cls.remote_server](args, setup, console)


def main(argv: list[str] | None = None) -> int:
    return cli.run_command(_sweep, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
