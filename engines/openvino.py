"""OpenVINO engine: an IR artifact (fp32, bf16 execution, int8 from NNCF) on the CPU plugin.

The CPU plugin picks bf16 execution by itself on CPUs with AVX512-BF16 or AMX, so the engine
always sets the inference precision from the run's `--precision`, and refuses a compiled model
whose precision is not the one asked for: an "fp32" row never runs bf16 kernels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import ConfigError, EngineError, require
from engines.artifact import verify
from engines.base import Engine, EngineOptions, option

IR_FILE = "model.xml"
#: --precision -> the CPU plugin's INFERENCE_PRECISION_HINT (int8 models keep fp32 elsewhere)
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
#: compiled-model properties recorded in every row
REPORTED = (
    "PERFORMANCE_HINT",
    "NUM_STREAMS",
    "INFERENCE_NUM_THREADS",
    "INFERENCE_PRECISION_HINT",
    "ENABLE_CPU_PINNING",
    "OPTIMAL_NUMBER_OF_INFER_REQUESTS",
    "DYNAMIC_QUANTIZATION_GROUP_SIZE",  # int8-weight-only MatMuls: activations quantized per call
)


@dataclass(frozen=True)
class OpenVinoOptions(EngineOptions):
    ov_hint: str = option(
        "latency",
        flag="--ov-hint",
        help="openvino engine: performance hint (latency: one stream, all threads on each "
        "request; throughput: several streams for concurrent requests)",
        choices=("latency", "throughput"),
    )
    ov_streams: int = option(
        0,
        flag="--ov-streams",
        help="openvino engine: execution streams (0: what the hint picks)",
    )
    ov_pinning: str = option(
        "auto",
        flag="--ov-pinning",
        help="openvino engine: pin inference threads to cores (auto: the plugin's default)",
        choices=("auto", "on", "off"),
    )

    def check(self, config) -> None:
        if self.ov_streams < 0:
            raise ConfigError(
                f"--ov-streams must be >= 0 (0: the hint's choice); got {self.ov_streams}"
            )
        if config.precision not in PRECISION_HINTS:
            raise ConfigError(
                f"--engine openvino runs --precision {', '.join(PRECISION_HINTS)}; "
                f"got {config.precision!r}"
            )


def compile_config(options: OpenVinoOptions, precision: str, threads: int | None) -> dict:
    """The CPU plugin properties the engine's options and the run's precision ask for."""
    props: dict[str, Any] = {
        "PERFORMANCE_HINT": options.ov_hint.upper(),
        "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
    }
    if options.ov_streams:
        props["NUM_STREAMS"] = options.ov_streams
    if threads:
        props["INFERENCE_NUM_THREADS"] = threads
    if options.ov_pinning != "auto":
        props["ENABLE_CPU_PINNING"] = options.ov_pinning == "on"
    return props


class OpenVinoEngine(Engine):
    artifact_format = "openvino"
    requires = (("openvino", "openvino"),)
    Options = OpenVinoOptions
    task_note = "the OpenVINO exporter handles text encoders only"

    def load(self) -> None:
        ov = require("openvino", "openvino", "openvino")
        cfg = self.config
        self._artifact()
        want = {"format": "openvino", "model": cfg.model, "precision": cfg.precision}
        m = verify(cfg.artifact, {**want, "variant": cfg.variant})
        props = compile_config(self.options, cfg.precision, cfg.threads)
        try:
            self.compiled = ov.Core().compile_model(f"{cfg.artifact}/{IR_FILE}", "CPU", props)
        except RuntimeError as e:
            raise EngineError(
                f"OpenVINO could not compile {cfg.artifact}: {str(e).splitlines()[0]}"
            ) from e
        got = {k: _prop(self.compiled, k) for k in REPORTED}
        ran = str(got["INFERENCE_PRECISION_HINT"])
        if ran not in (PRECISION_HINTS[cfg.precision], "None"):
            raise EngineError(
                f"OpenVINO compiled {cfg.artifact} for {ran} execution although --precision "
                f"{cfg.precision} asks for {PRECISION_HINTS[cfg.precision]}; this CPU may lack "
                "the instructions (bf16 needs AVX512-BF16 or AMX)"
            )
        self._inputs = [p.get_any_name() for p in self.compiled.inputs]
        self._local = threading.local()
        self._load_pipeline()
        self.info.update(
            weights=m.weights,
            model_source=m.model_id,
            openvino=ov.__version__,
            openvino_config=", ".join(f"{k}={v}" for k, v in got.items()),
            parity=m.parity,
            artifact=str(cfg.artifact),
        )

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        # an infer request is not thread-safe: one per calling thread (batcher, workers)
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        out = req.infer({k: inputs[k] for k in self._inputs})  # copies the outputs out
        return out[0]

    def close(self) -> None:
        self.compiled = None
        self._local = threading.local()


def _prop(compiled: Any, key: str) -> Any:
    try:
        value = compiled.get_property(key)
    except RuntimeError:
        return None
    if hasattr(value, "get_type_name"):  # an element type: f32, bf16
        return value.get_type_name()
    return getattr(value, "name", value)  # enums: LATENCY, THROUGHPUT
