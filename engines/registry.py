"""Engine registry: CLI name -> "module:Class", resolved lazily so heavy imports stay optional."""

from __future__ import annotations

import importlib
from dataclasses import fields
from typing import Any

from core.errors import ConfigError
from engines.base import Engine, EngineConfig

ENGINES: dict[str, str] = {
    "eager": "engines.torch_eager:EagerEngine",
    "fake": "engines.fake:FakeEngine",
    "compile": "engines.torch_compile:CompileEngine",
    "aoti": "engines.torch_compile:AotiEngine",
    "onnx": "engines.onnxruntime:OnnxEngine",
    "openvino": "engines.openvino:OpenVinoEngine",
    "trt": "engines.tensorrt:TensorRTEngine",
    "neuron": "engines.neuron:NeuronEngine",
    "triton": "engines.triton.remote:TritonEngine",
}


def engine_class(name: str) -> type[Engine]:
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
    module, _, cls = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def create_engine(config: EngineConfig) -> Engine:
    return engine_class(config.engine)(config)


def engine_config(engine: str, model: str, **kw: Any) -> EngineConfig:
    """An EngineConfig from flat keywords: the common fields, and this engine's own options
    (other engines' options are ignored, as the CLI ignores their flags)."""
    cls = engine_class(engine)
    own = {f.name for f in fields(cls.Options)}
    others = {f.name for name in ENGINES for f in fields(engine_class(name).Options)} - own
    options = cls.Options(**{k: kw.pop(k) for k in list(kw) if k in own})
    for k in others & set(kw):
        del kw[k]
    return EngineConfig(engine=engine, model=model, options=options, **kw)
