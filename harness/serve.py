"""`python -m harness.serve`: serve any engine over HTTP through the dynamic batcher.

Routes: KServe v2 / Triton (`/v2/...`, drivable by tritonclient and perf_analyzer), OpenAI
`/v1/embeddings`, `/classify`, Prometheus `/metrics`. Binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys

from engines.errors import BillionbenchError
from engines.registry import create_engine
from harness.run import _Parser, add_common_args, prepare_artifact, print_error, resolve_setup
from serving.batcher import BatcherConfig, DynamicBatcher
from serving.server import Server, ServerLimits

log = logging.getLogger("billionbench")


def add_batcher_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dynamic batcher")
    g.add_argument("--max-batch-size", type=int, default=32, help="inputs per forward pass")
    g.add_argument(
        "--max-batch-tokens",
        type=int,
        default=16384,
        help="padded tokens per forward pass (batch x longest input)",
    )
    g.add_argument(
        "--max-queue-delay-ms",
        type=float,
        default=2.0,
        help="how long the oldest input may wait for its batch to fill",
    )
    g.add_argument(
        "--max-queue",
        type=int,
        default=4096,
        help="inputs waiting before new requests get 429 + Retry-After",
    )
    g.add_argument("--max-request-inputs", type=int, default=256, help="inputs per request")
    g.add_argument(
        "--fifo",
        action="store_true",
        help="plain FIFO batching instead of grouping inputs by length",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="harness.serve",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.set_defaults(task="classification")
    add_common_args(p)
    add_batcher_args(p)
    g = p.add_argument_group("http")
    g.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    g.add_argument("--port", type=int, default=8000)
    g.add_argument("--max-body-mb", type=float, default=8.0, help="request body cap")
    g.add_argument("--max-text-chars", type=int, default=100_000, help="per-input character cap")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    g.add_argument(
        "--truncate",
        action="store_true",
        help="cut inputs at the model's max length instead of answering 413",
    )
    return p


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
    spec, engine_cls, profile, detected, engine_cfg = resolve_setup(args)
    bcfg = batcher_config(args)
    if engine_cls.artifact_format:
        max_len = args.max_seq_len or spec.max_seq_len
        engine_cfg, _ = prepare_artifact(
            args,
            engine_cls.artifact_format,
            engine_cfg,
            profile,
            batch_range=(1, max(1, bcfg.max_batch_size // 2), bcfg.max_batch_size),
            seq_range=(min(8, max_len), min(128, max_len), max_len),
            console=console,
        )
    engine = create_engine(engine_cfg)
    engine.load()
    batcher = DynamicBatcher(engine, bcfg)
    limits = ServerLimits(
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_text_chars=args.max_text_chars,
        truncate=args.truncate,
    )
    return Server(engine, batcher, limits), profile, detected


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from harness.run import _setup_logging

    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    _setup_logging(console, args.verbose)
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
        f"{server.codec.route}, /metrics)",
        highlight=False,
    )
    try:
        web.run_app(
            server.app(),
            host=args.host,
            port=args.port,
            print=None,
            handle_signals=True,
            access_log=None,
        )
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
