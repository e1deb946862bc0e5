"""`python -m harness.serve`: serve any engine over HTTP through the dynamic batcher.

Routes: KServe v2 / Triton (`/v2/...`, drivable by tritonclient and perf_analyzer), OpenAI
`/v1/embeddings`, `/classify`, Prometheus `/metrics`. Binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from engines.base import fields_from
from engines.errors import BillionbenchError
from engines.registry import create_engine
from harness.cli import build_serve_parser, print_error, setup_logging
from harness.setup import prepare_artifact, resolve_setup
from serving.batcher import BatcherConfig, DynamicBatcher
from serving.grpc_server import GrpcPortBusy, start_grpc
from serving.server import Server, ServerLimits

log = logging.getLogger("billionbench")


def batcher_config(args) -> BatcherConfig:
    """The batcher's config from the flags (same names, but for two)."""
    return fields_from(
        BatcherConfig, args, max_queue_inputs=args.max_queue, length_aware=not args.fifo
    )


def build_server(args, console):
    """Load the engine (exporting its artifact if needed) and wrap it in batcher + server."""
    resolved = resolve_setup(args)
    engine_cfg = resolved.engine_cfg
    bcfg = batcher_config(args)
    if resolved.engine_cls.needs_artifact(engine_cfg):
        batch_range = (1, max(1, bcfg.max_batch_size // 2), bcfg.max_batch_size)
        engine_cfg = prepare_artifact(
            args, resolved, batch_range=batch_range, console=console
        ).engine_cfg
    engine = create_engine(engine_cfg)
    engine.load()
    batcher = DynamicBatcher(engine, bcfg)
    limits = ServerLimits(
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_text_chars=args.max_text_chars,
        truncate=args.truncate,
    )
    return Server(engine, batcher, limits), resolved.profile, resolved.detected


def build_parser():
    return build_serve_parser()


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = build_serve_parser().parse_args(argv)
    console = Console(stderr=True)
    setup_logging(console, args.verbose)
    if not 0 <= args.port <= 65535:
        print_error(console, f"--port must be in [0, 65535]; got {args.port}")
        return 2
    try:
        server, profile, detected = build_server(args, console)
    except BillionbenchError as e:
        print_error(console, e)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding to %s: the server has no authentication", args.host)
    server.batcher.start()
    try:
        asyncio.run(_serve(server, args, console, profile, detected))
    except GrpcPortBusy as e:
        print_error(console, str(e))
        return 2
    except OSError as e:
        print_error(
            console, f"cannot listen on {args.host}:{args.port}: {e.strerror}; pick another --port"
        )
        return 2
    finally:
        server.batcher.stop()
        server.engine.close()
    return 0


async def _serve(server: Server, args, console, profile, detected) -> None:
    """Listen until SIGINT or SIGTERM, then stop taking connections."""
    runner = await server.start(args.host, args.port)
    grpc = None
    if args.grpc_port:
        try:
            grpc = await start_grpc(server, args.host, args.grpc_port)
        except BaseException:
            await runner.cleanup()
            raise
    console.print(
        f"serving {server.name} ({server.engine.info.get('weights')} weights) with "
        f"{args.engine} on {profile.name} = {detected.device_name} at "
        f"http://{args.host}:{args.port}  (KServe v2: /v2/models/{server.name}/infer, "
        f"{server.codec.route}, /metrics)"
        + (f"; gRPC at {args.host}:{args.grpc_port}" if args.grpc_port else ""),
        highlight=False,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        if grpc is not None:
            await grpc.stop(grace=1.0)
        await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
