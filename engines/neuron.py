"""AWS Inferentia2 engine: runs torch-neuronx traced artifacts, one static shape per bucket.

A Neuron traced module only accepts the exact shapes it was compiled for, so an artifact holds
one module per (batch, seq) bucket; each call is padded up to the smallest bucket that fits and
the outputs are trimmed back. The helpers at the top are pure so they are testable anywhere.
"""

from __future__ import annotations

import glob
import logging
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from core.environment import var
from core.errors import EngineError, HardwareMismatch, MissingDependency
from engines.artifact import verify
from engines.base import Engine

log = logging.getLogger(__name__)

Bucket = tuple[int, int]  # (batch, seq)

INPUT_NAMES = ("input_ids", "attention_mask")  # traced positional order
NEURON_INDEX = "https://pip.repos.neuron.amazonaws.com"
DEVICE_PATH = "/dev/neuron0"
# An Inferentia2 chip (one /dev/neuronN) has two NeuronCore-v2 (AWS "Inferentia2 Architecture").
CORES_PER_DEVICE = 2
NO_DEVICE = (
    "--engine neuron needs an AWS Inferentia2/Trainium device (/dev/neuron0); none here — "
    "run on an inf2 instance"
)


# ------------------------------------------------------------------------------ pure helpers


def bucket_file(batch: int, seq: int) -> str:
    """File name of one traced bucket inside an artifact folder."""
    return f"model_b{batch}_s{seq}.pt"


def _area(bucket: Bucket) -> tuple[int, int]:
    return bucket[0] * bucket[1], bucket[1]


def pick_bucket(buckets: list[Bucket], batch: int, seq: int) -> Bucket:
    """Smallest bucket (by batch*seq, then seq) holding `batch` rows of `seq` tokens."""
    if not buckets:
        raise EngineError("the neuron artifact lists no buckets; re-export it")
    fits = [(b, s) for b, s in buckets if b >= batch and s >= seq]
    if not fits:
        largest = max(buckets, key=_area)
        raise EngineError(
            f"no compiled bucket holds batch {batch} x {seq} tokens; the largest bucket is "
            f"batch {largest[0]} x seq {largest[1]} (max batch {max(b for b, _ in buckets)}, "
            f"max seq {max(s for _, s in buckets)}); lower the batch size or --max-seq-len, or "
            "re-export with larger --buckets"
        )
    return min(fits, key=_area)


def plan_call(buckets: list[Bucket], batch: int, seq: int, cores: int = 1) -> tuple[Bucket, int]:
    """(bucket, copies): run on one NeuronCore, or split rows evenly over `copies` cores.

    Splitting pays off only when it pads less work than one core would, e.g. 16 rows on two
    cores of a batch-8 bucket instead of one batch-32 bucket; ties go parallel (lower latency).
    """
    single: Bucket | None = None
    error: EngineError | None = None
    try:
        single = pick_bucket(buckets, batch, seq)
    except EngineError as e:
        error = e
    if cores > 1 and batch > 1:
        per_core = -(-batch // cores)
        try:
            par = pick_bucket(buckets, per_core, seq)
        except EngineError:
            par = None
        if par is not None and (single is None or cores * par[0] * par[1] <= single[0] * single[1]):
            return par, cores
    if single is None:
        assert error is not None
        raise error
    return single, 1


def pad_to_bucket(inputs: dict[str, np.ndarray], bucket: Bucket) -> dict[str, np.ndarray]:
    """Pad every [batch, seq] array with zeros up to `bucket` (extra rows and columns).

    Zero is the pad id and a masked position, so padded tokens never reach real rows' outputs;
    padded rows are computed and thrown away.
    """
    rows, cols = bucket
    out = {}
    for name, arr in inputs.items():
        b, s = arr.shape
        if b > rows or s > cols:
            raise EngineError(f"{name} of shape {b}x{s} does not fit bucket {rows}x{cols}")
        if (b, s) == (rows, cols):
            out[name] = arr
            continue
        padded = np.zeros((rows, cols), dtype=arr.dtype)
        padded[:b, :s] = arr
        out[name] = padded
    return out


def count_cores(visible: str) -> int:
    """NeuronCores in a NEURON_RT_VISIBLE_CORES value such as "0-3", "1" or "0,2-3"."""
    n = 0
    for part in visible.split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        n += int(hi) - int(lo) + 1 if dash else 1
    if n <= 0:
        raise ValueError(f"no NeuronCores in {visible!r}")
    return n


def visible_neuron_cores() -> int | None:
    """NeuronCores this process may use, from the runtime's env vars or the device files."""
    visible = var("NEURON_RT_VISIBLE_CORES", "").strip()
    if visible:
        try:
            return count_cores(visible)
        except ValueError:
            log.warning("cannot parse NEURON_RT_VISIBLE_CORES=%r", visible)
    num = var("NEURON_RT_NUM_CORES", "").strip()
    if num.isdigit() and int(num) > 0:  # 0 means "all" to the runtime
        return int(num)
    devices = glob.glob("/dev/neuron[0-9]*")
    return len(devices) * CORES_PER_DEVICE if devices else None


# ---------------------------------------------------------------------- library and hardware


def has_neuron_device() -> bool:
    # engines may not import harness, so this mirrors harness.hardware.has_neuron
    return os.path.exists(DEVICE_PATH)


def missing_neuronx() -> MissingDependency:
    """MissingDependency for torch-neuronx, plus AWS's index: it is not on PyPI."""
    err = MissingDependency("torch-neuronx", "neuron")
    message = f"{err.args[0]} --extra-index-url {NEURON_INDEX}"
    err.args = (message,)
    err.msg = message  # ImportError.__str__ prints .msg, not .args
    return err


def import_neuronx() -> Any:
    """Import torch_neuronx or raise MissingDependency (never a bare ImportError)."""
    try:
        import torch_neuronx
    except ImportError as e:
        raise missing_neuronx() from e
    return torch_neuronx


def require_device() -> None:
    if not has_neuron_device():
        raise HardwareMismatch(NO_DEVICE)


def package_version(dist: str, module: Any = None) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return getattr(module, "__version__", None) if module is not None else None


# ---------------------------------------------------------------------------------- engine


class NeuronEngine(Engine):
    """Traced torch-neuronx buckets; optionally split large batches over NeuronCores."""

    devices = ("neuron",)
    task_note = "Neuron is not supported (or required) for ColQwen2; use eager or compile"
    artifact_format = "neuron"
    requires = (("torch_neuronx", "neuron"),)
    install_hint = 'run on an inf2 instance with: pip install -e ".[neuron]" --extra-index-url https://pip.repos.neuron.amazonaws.com'

    def load(self) -> None:
        cfg = self.config
        # cheap checks first: a laptop without the library or an inf2 fails in one line
        neuronx = import_neuronx()
        require_device()
        if not cfg.artifact:
            raise EngineError(
                "--engine neuron runs an exported artifact; export one with "
                f"`python -m harness.export --format neuron --model {cfg.model} "
                f"--precision {cfg.precision}` and pass --artifact DIR"
            )
        import torch

        m = verify(
            cfg.artifact,
            expect={"format": "neuron", "model": cfg.model, "precision": cfg.precision},
            trust=cfg.trust_artifact,
        )
        buckets = sorted({(int(b), int(s)) for b, s in m.shape_profiles.get("buckets", [])})
        if not buckets:
            raise EngineError(f"artifact {cfg.artifact} lists no buckets; re-export it")
        max_seq = max(s for _, s in buckets)
        if cfg.max_seq_len is not None and cfg.max_seq_len > max_seq:
            raise EngineError(
                f"--max-seq-len {cfg.max_seq_len} exceeds the artifact's largest bucket "
                f"(seq {max_seq}); re-export with longer --buckets or lower --max-seq-len"
            )
        self._load_pipeline()
        assert self.pipeline is not None
        # tokenize no longer than the artifact accepts (counted as truncation, never an error)
        self.pipeline.max_seq_len = min(self.pipeline.max_seq_len, max_seq)

        cores = visible_neuron_cores() or 1
        parallel = bool(m.details.get("data_parallel")) and cores > 1
        self._modules: dict[Bucket, Any] = {}
        self._parallel: dict[Bucket, Any] = {}
        for b, s in buckets:
            path = Path(cfg.artifact) / bucket_file(b, s)
            try:
                # the runtime places each loaded module on a NeuronCore by itself
                module = torch.jit.load(str(path))
                if parallel:
                    # dynamic batching off: the documented contract is then exactly
                    # rows == compiled batch * len(device_ids), which infer() always pads to
                    self._parallel[(b, s)] = neuronx.DataParallel(
                        module, device_ids=list(range(cores)), dim=0, set_dynamic_batching=False
                    )
            except Exception as e:
                raise EngineError(f"could not load {path} on Neuron: {e}") from e
            self._modules[(b, s)] = module
        self._torch = torch
        self._buckets = buckets
        self._cores = cores if parallel else 1

        if self.info.get("tokenizer") != m.tokenizer:
            log.warning(
                "artifact was exported with tokenizer %s but %s is loaded here",
                m.tokenizer,
                self.info.get("tokenizer"),
            )
            self.info["runtime_tokenizer"] = self.info.get("tokenizer")
        self.info.update(
            weights=m.weights,
            model_source=m.model_id,
            tokenizer=m.tokenizer,
            artifact=str(cfg.artifact),
            torch=torch.__version__,
            torch_neuronx=package_version("torch-neuronx", neuronx),
            neuronx_cc=m.tool_versions.get("neuronx-cc"),
            compiler_args=m.details.get("compiler_args"),
            buckets=[list(b) for b in buckets],
            neuron_cores=cores,
            data_parallel=parallel,
            parity=m.parity,
        )

    def forward_shape(self, batch: int, seq: int) -> tuple[int, int] | None:
        """The bucket (times the NeuronCores it is split over) `infer` pads this batch to."""
        buckets = getattr(self, "_buckets", None)
        if not buckets:
            return batch, seq
        try:
            bucket, copies = plan_call(buckets, batch, seq, self._cores)
        except EngineError:
            return None
        return bucket[0] * copies, bucket[1]

    def infer(self, inputs: dict[str, np.ndarray]) -> Any:
        torch = self._torch
        batch, seq = inputs["input_ids"].shape
        bucket, copies = plan_call(self._buckets, batch, seq, self._cores)
        feeds = pad_to_bucket({k: inputs[k] for k in INPUT_NAMES}, (bucket[0] * copies, bucket[1]))
        args = tuple(torch.from_numpy(feeds[k]) for k in INPUT_NAMES)
        module = self._parallel[bucket] if copies > 1 else self._modules[bucket]
        with torch.no_grad():
            out = module(*args)  # CPU tensors in and out; the module moves data to the core
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = out[:batch]
        if self.spec.task != "classification":
            out = out[:, :seq]
        return out

    def close(self) -> None:
        self._parallel = {}
        self._modules = {}
