"""What `harness.serve` runs with: the batcher's config, the request limits, where it listens."""

from __future__ import annotations

from dataclasses import dataclass

from core.config import arg
from core.errors import ConfigError
from serving.batcher import BatcherConfig
from serving.server import ServerLimits


@dataclass(frozen=True)
class ServeConfig:
    """One server: how it batches, what a request may be, and its address."""

    batcher: BatcherConfig = arg(help="dynamic batcher", default_factory=BatcherConfig)
    limits: ServerLimits = arg(help="requests", default_factory=ServerLimits)
    host: str = arg("127.0.0.1", help="bind address (loopback by default)")
    port: int = arg(8000, help="HTTP port")
    grpc_port: int | None = arg(
        None,
        help="also serve KServe v2 over gRPC on this port, same --host (default: no gRPC); "
        "needs the triton extra",
    )

    def __post_init__(self) -> None:
        for name in ("port", "grpc_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be in [0, 65535]; got {value}")


__all__ = ["ServeConfig"]
