"""`python -m harness.serve`: serve any engine over HTTP through the dynamic batcher.

Routes: KServe v2 / Triton (`/v2/...`, drivable by tritonclient and perf_analyzer), OpenAI
`/v1/embeddings`, `/classify`, Prometheus `/metrics`. Binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import logging
import sys

from engines.errors import BillionbenchError
from engines.registry import create_engine
from harness.cli import build_serve_parser, print_error, setup_logging
from harness.setup import prepare_artifact, resolve_setup
from serving.batcher import BatcherConfig, DynamicBatcher
from serving.grpc_server import GrpcPortBusy
from serving.server import Server, ServerLimits

log = logging.getLogger("billionbench")


def batcher_config(args) -> BatcherConfig:
    return BatcherConfig(
        max_batch_size=args.max_batch_size,
        max_batch_tokens=args.max_batch_tokens,
        max_queue_delay_ms=args.max_queue_delay_ms,
        max_queue_inputs=args.max_queue,
        max_request_inputs=args.max_request_inputs,
        length_aware=not args.fifo,
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
    p = build_serve_parser()
    p.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="also serve KServe v2 over gRPC on this port, same --host (default: no gRPC); "
        "needs the triton extra",
    )
    return p


def _with_grpc(app, server, host: str, port: int):
    """Start the gRPC service with the HTTP app's event loop, and stop it with the app."""
    from serving.grpc_server import start_grpc

    async def start(app) -> None:
        app["grpc"] = await start_grpc(server, host, port)

    async def stop(app) -> None:
        await app["grpc"].stop(grace=1.0)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    setup_logging(console, args.verbose)
    try:
        server, profile, detected = build_server(args, console)
    except BillionbenchError as e:
        print_error(console, e)
        return 2
    from aiohttp import web

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding to %s: the server has no authentication", args.host)
    server.batcher.start()
    console.print(
        f"serving {server.name} ({server.engine.info.get('weights')} weights) with "
        f"{args.engine} on {profile.name} = {detected.device_name} at "
        f"http://{args.host}:{args.port}  (KServe v2: /v2/models/{server.name}/infer, "
        f"{server.codec.route}, /metrics)"
        + (f"; gRPC at {args.host}:{args.grpc_port}" if args.grpc_port else ""),
        highlight=False,
    )
    app = server.app()
    if args.grpc_port:
        app = _with_grpc(app, server, args.host, args.grpc_port)
    try:
        web.run_app(
            app,
            host=args.host,
            port=args.port,
            print=None,
            handle_signals=True,
            access_log=None,
        )
    except GrpcPortBusy as e:
        print_error(console, str(e))
        return 1
    except OSError as e:
        print_error(
            console, f"cannot listen on {args.host}:{args.port}: {e.strerror}; pick another --port"
        )
        return 1
    finally:
        server.batcher.stop()
        server.engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
