"""`python -m harness.serve`: serve any engine over HTTP through the dynamic batcher.

Routes: KServe v2 / Triton (`/v2/...`, drivable by tritonclient and perf_analyzer), OpenAI
`/v1/embeddings`, `/classify`, Prometheus `/metrics`. Binds to 127.0.0.1 unless told otherwise.
Its flags are a `ServeCommandConfig`; `--config FILE` reads the same config from the JSON a
sweep writes for each server it starts (`--port` still applies).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import replace
from pathlib import Path

from core.config import config_from, from_json
from core.errors import BillionbenchError, ConfigError
from engines.registry import create_engine
from harness.cli import Parser, add_config, print_error, setup_logging
from harness.config import ServeCommandConfig, add_target, target_from
from harness.target import prepare_artifact, resolve_setup
from serving.batcher import DynamicBatcher
from serving.config import ServeConfig
from serving.grpc_server import GrpcPortBusy, start_grpc
from serving.server import Server

log = logging.getLogger("billionbench")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="harness.serve",
        description="Serve any engine over HTTP through the dynamic batcher: KServe v2 / Triton "
        "(/v2/...), OpenAI /v1/embeddings, /classify and Prometheus /metrics, on 127.0.0.1 "
        "unless told otherwise.",
    )
    add_target(p)
    add_config(p, ServeConfig, "http")
    add_config(p, ServeCommandConfig, only=("verbose",))
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="read the whole config from this JSON file (as a sweep writes it); --port applies",
    )
    return p


def config_of(ns: argparse.Namespace, argv: list[str]) -> ServeCommandConfig:
    """The command's config: from --config FILE (with --port when given), else the flags."""
    if ns.config is None:
        return config_from(ServeCommandConfig, ns, target=target_from(ns))
    try:
        cfg = from_json(ServeCommandConfig, Path(ns.config).read_text())
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"--config {ns.config}: cannot read a serve config ({e})") from None
    if any(a == "--port" or a.startswith("--port=") for a in argv):
        cfg = replace(cfg, serve=replace(cfg.serve, port=ns.port))
    return cfg


def build_server(cfg: ServeCommandConfig, console):
    """Load the engine (exporting its artifact if needed) and wrap it in batcher + server."""
    resolved = resolve_setup(cfg.target)
    engine_cfg = resolved.engine_cfg
    batcher = cfg.serve.batcher
    if resolved.engine_cls.needs_artifact(engine_cfg):
        top = batcher.max_batch_size
        engine_cfg = prepare_artifact(
            resolved, batch_range=(1, max(1, top // 2), top), console=console
        ).engine_cfg
    engine = create_engine(engine_cfg)
    engine.load()
    server = Server(engine, DynamicBatcher(engine, batcher), cfg.serve.limits)
    return server, resolved.profile, resolved.detected


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    argv = list(sys.argv[1:] if argv is None else argv)
    ns = build_parser().parse_args(argv)
    console = Console(stderr=True)
    setup_logging(console, ns.verbose)
    try:
        cfg = config_of(ns, argv)
        server, profile, detected = build_server(cfg, console)
    except BillionbenchError as e:
        print_error(console, e)
        return 2
    http = cfg.serve
    if http.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding to %s: the server has no authentication", http.host)
    server.batcher.start()
    try:
        asyncio.run(_serve(server, http, console, profile, detected))
    except GrpcPortBusy as e:
        print_error(console, str(e))
        return 2
    except OSError as e:
        print_error(
            console, f"cannot listen on {http.host}:{http.port}: {e.strerror}; pick another --port"
        )
        return 2
    finally:
        server.batcher.stop()
        server.engine.close()
    return 0


async def _serve(server: Server, http: ServeConfig, console, profile, detected) -> None:
    """Listen until SIGINT or SIGTERM, then stop taking connections."""
    import signal

    runner = await server.start(http.host, http.port)
    grpc = None
    if http.grpc_port:
        try:
            grpc = await start_grpc(server, http.host, http.grpc_port)
        except BaseException:
            await runner.cleanup()
            raise
    console.print(
        f"serving {server.name} ({server.engine.info.get('weights')} weights) with "
        f"{server.engine.config.engine} on {profile.name} = {detected.device_name} at "
        f"http://{http.host}:{http.port}  (KServe v2: /v2/models/{server.name}/infer, "
        f"{server.codec.route}, /metrics)"
        + (f"; gRPC at {http.host}:{http.grpc_port}" if http.grpc_port else ""),
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
