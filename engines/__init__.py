"""In-process inference: model specs, shared pre/post-processing, one module per runtime."""

from core.errors import (
    BillionbenchError,
    ConfigError,
    EngineError,
    HardwareMismatch,
    MissingDependency,
)
from engines.base import Engine, EngineConfig
from engines.registry import ENGINES, create_engine, engine_class

__all__ = [
    "ENGINES",
    "BillionbenchError",
    "ConfigError",
    "Engine",
    "EngineConfig",
    "EngineError",
    "HardwareMismatch",
    "MissingDependency",
    "create_engine",
    "engine_class",
]
