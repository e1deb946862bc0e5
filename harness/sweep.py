"""`python -m harness.sweep`: the HTTP sweep: servers x load shapes x a VU search.

For each server max batch size x inputs per request it starts `harness.serve` (or targets
`--url`), doubles the VUs while throughput improves by more than the noise margin, then
binary-searches between the last two points. Every measured point is a result row
(`mode=http`), appended at once and skipped on resume. The best point is always one that was
measured; the noise margin is max(--improvement, the spread of repeated measurements).
`--search rate --p99-ms T` finds the highest Poisson rate whose p99 upper bound stays
under T (MLPerf's server scenario), bisecting between measured rates. Against a Triton engine
it runs Model Analyzer's config search through a real tritonserver instead.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from core.config import config_from
from core.errors import ConfigError
from engines.registry import engine_class
from harness import cli, runner
from harness.config import (
    ExecutorConfig,
    OutputConfig,
    TargetConfig,
    benchmark_flags,
    executor_from,
    target_from,
)
from harness.executors.distributed_load import DistributedLoad
from harness.executors.ray_cluster import connect, import_ray, launcher
from harness.scenarios.http import CEILING_S, HttpConfig, HttpScenario
from harness.scenarios.triton_sweep import TritonScenario, TritonSweepConfig
from harness.target import load_setup
from serving.batcher import BatcherConfig
from serving.config import ServeConfig
from serving.server import ServerLimits
from workloads import WorkloadSpec


def build_parser() -> argparse.ArgumentParser:
    return benchmark_flags(
        cli.Parser(prog="harness.sweep", description=__doc__),
        (BatcherConfig, "dynamic batcher (our servers)"),
        (ServerLimits, "requests (our servers)"),
        (WorkloadSpec, "workload"),
        (HttpConfig, "sweep"),
        (TritonSweepConfig, "triton (--engine triton: Model Analyzer-style search)"),
    )


@dataclass(frozen=True)
class Build:
    """What a machine builds a target's sweep from (here, or on a cluster node): picklable."""

    workload: WorkloadSpec
    http: HttpConfig
    triton: TritonSweepConfig
    serve: ServeConfig
    out_dir: str
    load: DistributedLoad | None = None

    def __call__(self, target: TargetConfig, console) -> runner.Scenario:
        setup = load_setup(target, self.workload)
        # how to sweep an engine follows the server it is a client of (None: ours)
        server = setup.engine_cls.remote_server
        if server is not None and server.config_sweep:
            return TritonScenario(self.triton, setup, console, out_dir=self.out_dir)
        return HttpScenario(
            self.http, setup, console, serve=self.serve, out_dir=self.out_dir, load=self.load
        )


def _sweep(ns: argparse.Namespace, console) -> int:
    target, output = target_from(ns), config_from(OutputConfig, ns)
    executor = executor_from(ns)
    build = Build(
        workload=config_from(WorkloadSpec, ns),
        http=config_from(HttpConfig, ns),
        triton=config_from(TritonSweepConfig, ns),
        serve=config_from(ServeConfig, ns),
        out_dir=output.output_dir,
    )
    if build.http.load_workers is not None:
        return _distributed_load(build, target, executor, output, console)
    return launcher(executor)(build, target, executor, output, console, "python -m harness.sweep")


def _distributed_load(
    build: Build, target: TargetConfig, executor: ExecutorConfig, output: OutputConfig, console
) -> int:
    """One endpoint, N load generators on the cluster: the sweep runs here, its load there."""
    http = build.http
    if executor.executor != "ray" or not http.url:
        raise ConfigError(
            "--load-workers runs load generators on a Ray cluster against one endpoint: give "
            "--executor ray and --url"
        )
    if engine_class(target.engine).remote_server or http.protocol == "kserve-grpc":
        raise ConfigError(
            f"--load-workers drives HTTP endpoints of our server or a peer (not --engine "
            f"{target.engine}, not gRPC)"
        )
    target.require_single()
    ray = import_ray()
    started = connect(ray, executor, console)
    try:
        ceiling_s = None if http.no_ceiling else CEILING_S
        load = DistributedLoad(ray, http.load_workers, ceiling_s=ceiling_s, console=console)
        local = ExecutorConfig(executor="local")
        build = Build(**{**build.__dict__, "load": load})
        return launcher(local)(build, target, local, output, console, "python -m harness.sweep")
    finally:
        if started:
            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    return cli.command_main(build_parser(), _sweep, argv)


if __name__ == "__main__":
    sys.exit(main())
