"""Engine registry: CLI name -> "module:Class", resolved lazily so heavy imports stay optional."""

from __future__ import annotations

import importlib

from engines.base import Engine, EngineConfig
from engines.errors import ConfigError, NotImplementedYet

ENGINES: dict[str, str | None] = {
    "eager": "engines.torch_eager:EagerEngine",
    "fake": "engines.fake:FakeEngine",
    # documented in DESIGN.md, built by later issues; None means "not implemented yet"
    "compile": None,
    "aoti": None,
    "onnx": None,
    "trt": None,
    "neuron": None,
    "triton": None,
}
_PLANNED_IN = {"compile": 3, "aoti": 3, "onnx": 3, "trt": 3, "neuron": 3, "triton": 5}


def engine_class(name: str) -> type[Engine]:
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
    target = ENGINES[name]
    if target is None:
        raise NotImplementedYet(
            f"engine {name!r} is not implemented yet (tracked in issue #{_PLANNED_IN[name]}); "
            "available now: " + ", ".join(k for k, v in ENGINES.items() if v)
        )
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def create_engine(config: EngineConfig) -> Engine:
    return engine_class(config.engine)(config)
