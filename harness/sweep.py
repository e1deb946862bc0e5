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

from harness import runner
from harness.cli import (
    Parser,
    add_batcher_args,
    add_common_args,
    add_output_args,
    add_workload_args,
    int_list,
    positive_float,
    run_command,
)
from harness.scenarios.http import HttpScenario
from harness.scenarios.triton import TritonScenario
from harness.setup import load_setup

# how to sweep an engine, by the kind of server it is a client of (None: ours)
SCENARIOS = {None: HttpScenario, "triton": TritonScenario}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="harness.sweep", description=__doc__)
    add_common_args(p)
    add_batcher_args(p)
    add_workload_args(p)
    g = p.add_argument_group("sweep")
    g.add_argument(
        "--batch-sizes",
        type=int_list,
        default=[8, 32],
        help="server max batch sizes, one server start each",
    )
    g.add_argument(
        "--inputs-per-request",
        type=int_list,
        default=[1],
        help="client batch (inputs per HTTP request), comma-separated",
    )
    g.add_argument("--vus-start", type=int, default=1)
    g.add_argument("--vus-max", type=int, default=32)
    g.add_argument("--iterations", type=int, default=200, help="k6 shared iterations per point")
    g.add_argument(
        "--max-duration",
        type=positive_float,
        default=10.0,
        help="seconds per point (k6 maxDuration)",
    )
    g.add_argument("--repeats", type=int, default=2, help="runs per point; gives the noise margin")
    g.add_argument(
        "--improvement",
        type=float,
        default=0.02,
        help="keep doubling VUs while throughput improves by more than this",
    )
    g.add_argument("--max-p95-ms", type=positive_float, default=None)
    g.add_argument("--max-p99-ms", type=positive_float, default=None)
    g.add_argument("--url", default=None, help="benchmark this server instead of starting ours")
    g.add_argument(
        "--protocol",
        choices=("kserve", "triton", "kserve-grpc", "openai", "classify", "hf"),
        default="kserve",
        help="kserve-grpc: KServe v2 over gRPC (--url host:port, or our server started with a gRPC port)",
    )
    g.add_argument(
        "--served-model", default=None, help="model name on the target (default: the registry name)"
    )
    g.add_argument(
        "--no-ceiling", action="store_true", help="skip measuring the load generator's own ceiling"
    )
    g.add_argument(
        "--rate",
        type=positive_float,
        default=None,
        help="open loop instead of the VU search: Poisson arrivals at this many requests/s for "
        "--max-duration, at most --vus-max in flight; latency counts from the scheduled send",
    )
    g = p.add_argument_group(
        "triton (--engine triton: Model Analyzer-style search through a real tritonserver)"
    )
    g.add_argument(
        "--search",
        default="instances,max_batch,delay",
        help="dimensions to search (others keep their first value): instances, max_batch, delay",
    )
    g.add_argument("--instances", type=int_list, default=[1, 2, 4], help="instance_group counts")
    g.add_argument(
        "--max-batch", type=int_list, default=[1, 8, 32], help="encoder max_batch_size values"
    )
    g.add_argument(
        "--queue-delays-us",
        default="off,500",
        help="dynamic batching: 'off', or on with this max_queue_delay_microseconds",
    )
    g.add_argument(
        "--concurrency", type=int_list, default=[1, 8, 32], help="concurrent clients per config"
    )
    add_output_args(p)
    return p


def _sweep(args: argparse.Namespace, console) -> int:
    setup = load_setup(args)
    scenario = SCENARIOS[setup.engine_cls.remote_server](args, setup, console)
    runner.run(scenario, output_dir=args.output_dir, resume=args.resume, console=console)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(_sweep, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
