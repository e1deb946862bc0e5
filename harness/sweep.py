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

from engines.errors import ConfigError
from harness import cli, runner
from harness.executors.ray_cluster import connect, import_ray, run_on_ray
from harness.load.distributed import DistributedLoad
from harness.scenarios.http import CEILING_S, HttpScenario
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
        --load-workers       | int            |           | with --executor ray and --url: this many load generators on different nodes drive the endpoint together (VUs split among them; latencies merged from every request)
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
    if args.load_workers is not None:
        return _distributed_load(args, console)
    if args.executor == "ray":
        return run_on_ray(args, console, build_scenario)
    cli.require_single_targets(args)
    return runner.run_command_scenario(args, console, "harness.sweep", build_scenario)


def _distributed_load(args: argparse.Namespace, console) -> int:
    """One endpoint, N load generators on the cluster: the sweep runs here, its load there."""
    if args.executor != "ray" or not args.url:
        raise ConfigError(
            "--load-workers runs load generators on a Ray cluster against one endpoint: give "
            "--executor ray and --url"
        )
    if args.load_workers < 1:
        raise ConfigError(f"--load-workers must be >= 1; got {args.load_workers}")
    if args.engine == "triton" or args.protocol == "kserve-grpc":
        raise ConfigError("--load-workers drives HTTP endpoints (not --engine triton or gRPC)")
    cli.require_single_targets(args)
    ray = import_ray()
    started = connect(ray, args, console)
    try:
        ceiling_s = None if args.no_ceiling else CEILING_S
        load = DistributedLoad(ray, args.load_workers, ceiling_s=ceiling_s, console=console)

        def build(a: argparse.Namespace, c) -> runner.Scenario:
            return HttpScenario(a, load_setup(a), c, load=load)

        return runner.run_command_scenario(args, console, "harness.sweep", build)
    finally:
        if started:
            ray.shutdown()


def build_scenario(args: argparse.Namespace, console) -> runner.Scenario:
    """Flags -> the sweep to run, on the machine that runs it (here, or a node)."""
    setup = load_setup(args)
    return SCENARIOS[setup.engine_cls.remote_server](args, setup, console)


def main(argv: list[str] | None = None) -> int:
    return cli.run_command(_sweep, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
