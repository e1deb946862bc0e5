"""`python -m harness.tools`: the outside tools billionbench drives, set up or started by hand.

    python -m harness.tools prepare perf_analyzer   # a runnable perf_analyzer, once
    python -m harness.tools prepare tritonserver    # the bundled tritonserver's python backend
    python -m harness.tools serve-triton REPO       # serve a model repository until Ctrl-C

The benchmarks themselves are `harness.run --load perf_analyzer` and `harness.sweep`.
"""

from __future__ import annotations

import sys
import time

from core.processes import perf_analyzer, tritonserver
from harness.cli import Parser, run_command


def parser() -> Parser:
    p = Parser(prog="harness.tools", description="Set up or start the outside tools we drive.")
    sub = p.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare", help="make a tool runnable here (once)")
    prep.add_argument("tool", choices=("perf_analyzer", "tritonserver"))
    serve = sub.add_parser("serve-triton", help="serve a Triton model repository until Ctrl-C")
    serve.add_argument("repository")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "prepare" and args.tool == "perf_analyzer":
        return run_command(_prepare_perf_analyzer)
    if args.cmd == "prepare":
        return run_command(_prepare_tritonserver)
    return run_command(lambda console: _serve_triton(console, args.repository))


def _prepare_perf_analyzer(console) -> int:
    binary = perf_analyzer.prepare()
    b, env = perf_analyzer.find_binary()
    console.print(f"{perf_analyzer.version(b, env)} ready: {binary}", highlight=False)
    return 0


def _prepare_tritonserver(console) -> int:
    out = tritonserver.prepare_stub_env(install_numpy=True)
    inst = tritonserver.find_installation()
    console.print(
        f"tritonserver ready: {inst.binary} ({inst.source}); stub environment {out}",
        highlight=False,
    )
    return 0


def _serve_triton(console, repository: str) -> int:
    server = tritonserver.TritonServer(repository, explicit=False, ready_timeout_s=600)
    server.start()
    console.print(
        f"serving {server.repository}: HTTP {server.url}, gRPC {server.grpc_url}, "
        f"metrics http://127.0.0.1:{server.metrics_port}/metrics (log {server.log_file()})",
        highlight=False,
    )
    try:
        while server.proc and server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
