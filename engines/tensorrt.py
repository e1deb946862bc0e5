"""TensorRT engine: runs an FP16 plan exported by `python -m harness.export --format trt`.

A plan is tied to the GPU model and TensorRT version that built it, so the manifest records
both and a plan built elsewhere is refused with the rebuild command instead of failing inside
TensorRT. Uses the TensorRT 10 name-based tensor API (`set_input_shape`, `set_tensor_address`,
`execute_async_v3`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import EngineError, HardwareMismatch, MissingDependency
from engines.artifact import ArtifactError, verify
from engines.base import Engine

log = logging.getLogger(__name__)

PLAN_FILE = "model.plan"
EXPORT_HINT = "python -m harness.export --format trt --precision fp16"


def import_tensorrt() -> Any:
    """The tensorrt module, or a MissingDependency naming the pip extra."""
    try:
        import tensorrt
    except ImportError as e:
        raise MissingDependency("tensorrt", "gpu") from e
    return tensorrt


def current_hardware() -> dict[str, str]:
    """GPU name, compute capability and TensorRT version of this machine (needs a CUDA GPU)."""
    trt = import_tensorrt()
    import torch

    if not torch.cuda.is_available():
        raise HardwareMismatch("TensorRT needs an NVIDIA GPU with CUDA; none is visible here")
    major, minor = torch.cuda.get_device_capability(0)
    return {
        "gpu": torch.cuda.get_device_name(0),
        "compute_capability": f"{major}.{minor}",
        "tensorrt": trt.__version__,
    }


def plan_compatible(built_for: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why a plan built for `built_for` cannot run on `current`, or None when it can."""
    problems = []
    for key, what in (("gpu", "GPU"), ("tensorrt", "TensorRT")):
        want, have = built_for.get(key), current.get(key)
        if not want:
            problems.append(f"the manifest does not record the {what} it was built for")
        elif want != have:
            problems.append(f"built for {what} {want}, this machine has {have}")
    if not problems:
        return None
    # TensorRT plans hold kernels chosen for one GPU model and one TensorRT build
    return (
        "TensorRT plan cannot run here: "
        + "; ".join(problems)
        + f"; rebuild it on this machine with: {EXPORT_HINT}"
    )


def capturing_logger(trt: Any) -> Any:
    """A trt.ILogger whose `.errors` keeps every ERROR / INTERNAL_ERROR message verbatim."""

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # required for pybind trampolines (TensorRT docs)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return CapturingLogger()


class TensorRTEngine(Engine):
    devices = ("cuda",)
    task_note = "TensorRT is not supported (or required) for ColQwen2; use eager or compile"
    artifact_format = "trt"
    requires = (("tensorrt", "gpu"),)
    install_hint = (
        'TensorRT wheels come from NVIDIA\'s index; on a GPU host: pip install -e ".[gpu]"'
    )

    def load(self) -> None:
        trt = import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise HardwareMismatch("--engine trt needs an NVIDIA GPU with CUDA; none is visible")
        cfg = self.config
        if cfg.precision != "fp16":
            raise EngineError(
                f"--engine trt runs FP16 plans; use --precision fp16 (got {cfg.precision})"
            )
        if not cfg.artifact:
            raise EngineError(
                f"--engine trt runs an exported plan; export one with: {EXPORT_HINT} "
                f"--model {cfg.model} and pass its folder as the artifact"
            )
        folder = Path(cfg.artifact)
        m = verify(
            folder,
            expect={"format": "trt", "model": cfg.model, "precision": cfg.precision},
            trust=cfg.trust_artifact,
        )
        here = current_hardware()
        reason = plan_compatible(m.hardware, here)
        if reason:
            raise ArtifactError(f"artifact {folder}: {reason}")

        self._logger = capturing_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine((folder / PLAN_FILE).read_bytes())
        if engine is None:
            raise EngineError(
                f"could not deserialize {folder / PLAN_FILE}: " + _errors(self._logger)
            )
        context = engine.create_execution_context()
        if context is None:
            raise EngineError(
                "could not create a TensorRT execution context: " + _errors(self._logger)
            )

        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if not self._outputs:
            raise EngineError(f"plan {folder / PLAN_FILE} has no output tensors; re-export it")
        self._dtypes = {n: _torch_dtype(torch, trt, engine.get_tensor_dtype(n)) for n in names}
        # profile 0 bounds, so out-of-range batches fail with a message rather than inside TRT
        self._bounds = {
            n: [tuple(d) for d in engine.get_tensor_profile_shape(n, 0)] for n in self._inputs
        }
        self._engine, self._context = engine, context
        self._torch = torch
        self._device = torch.device("cuda", torch.cuda.current_device())

        self._load_pipeline()
        if m.tokenizer and self.info.get("tokenizer") != m.tokenizer:
            log.warning(
                "artifact was exported with tokenizer %s but %s is loaded here",
                m.tokenizer,
                self.info.get("tokenizer"),
            )
            self.info["artifact_tokenizer"] = m.tokenizer
        self.info.update(
            weights=m.weights,
            model_source=m.model_id,
            tensorrt=trt.__version__,
            gpu=here["gpu"],
            parity=m.parity,
            artifact=str(folder),
        )

    def infer(self, inputs: dict[str, np.ndarray]) -> Any:
        torch, ctx, dev = self._torch, self._context, self._device
        missing = [n for n in self._inputs if n not in inputs]
        if missing:
            raise EngineError(f"plan expects inputs {self._inputs}; missing {missing}")
        feeds = {
            n: torch.from_numpy(np.ascontiguousarray(inputs[n])).to(dev, dtype=self._dtypes[n])
            for n in self._inputs
        }
        seq = self._pad_to_profile(feeds)
        for name, t in feeds.items():
            if not ctx.set_input_shape(name, tuple(t.shape)):
                raise EngineError(f"TensorRT rejected shape {tuple(t.shape)} for input {name!r}")
            ctx.set_tensor_address(name, t.data_ptr())
        outs = {}
        for name in self._outputs:
            out = torch.empty(
                tuple(ctx.get_tensor_shape(name)), dtype=self._dtypes[name], device=dev
            )
            ctx.set_tensor_address(name, out.data_ptr())
            outs[name] = out
        stream = torch.cuda.current_stream(dev)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise EngineError("TensorRT execute_async_v3 failed: " + _errors(self._logger))
        stream.synchronize()
        # first output: logits for classifiers, last_hidden_state for embedders
        result = outs[self._outputs[0]]
        if result.dim() == 3 and result.shape[1] != seq:
            result = result[:, :seq]
        return result

    def forward_shape(self, batch: int, seq: int) -> tuple[int, int] | None:
        """Profile 0's bounds: batches inside its range, sequences padded up to its minimum."""
        bounds = getattr(self, "_bounds", None)
        if not bounds:
            return batch, seq
        lo_batch = max(b[0][0] for b in bounds.values())
        hi_batch = min(b[2][0] for b in bounds.values())
        hi_seq = min(b[2][1] for b in bounds.values())
        if not lo_batch <= batch <= hi_batch or seq > hi_seq:
            return None
        return batch, max(seq, max(b[0][1] for b in bounds.values()))

    def _pad_to_profile(self, feeds: dict[str, Any]) -> int:
        """Pad the sequence axis up to the profile minimum; return the real length."""
        torch = self._torch
        first = next(iter(feeds.values()))
        batch, seq = int(first.shape[0]), int(first.shape[1])
        for name in feeds:
            lo, _, hi = self._bounds[name]
            if not lo[0] <= batch <= hi[0]:
                raise EngineError(
                    f"batch {batch} is outside the plan's profile {lo[0]}..{hi[0]}; "
                    "re-export with a wider batch_range"
                )
            if seq > hi[1]:
                raise EngineError(
                    f"{seq} tokens exceed the plan's profile max {hi[1]} for {name!r}; "
                    "lower --max-seq-len or re-export with a wider seq_range"
                )
        need = max(self._bounds[n][0][1] for n in feeds)
        if seq < need:
            # padding tokens (id 0, mask 0) are masked out, so real positions are unchanged
            for name, t in feeds.items():
                feeds[name] = torch.nn.functional.pad(t, (0, need - seq), value=0)
        return seq

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._runtime = None
        if getattr(self, "_torch", None) is not None:
            self._torch.cuda.empty_cache()


def _errors(logger: Any) -> str:
    return " | ".join(logger.errors) or "TensorRT logged no error message"


def _torch_dtype(torch: Any, trt: Any, dt: Any) -> Any:
    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.BF16: torch.bfloat16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.BOOL: torch.bool,
    }
    if dt not in table:
        raise EngineError(f"plan uses tensor type {dt}, which this engine does not feed")
    return table[dt]
