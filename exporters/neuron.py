"""Inferentia2 exporter: one torch-neuronx traced module per (batch, seq) bucket."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from engines import neuron as neuron_engine
from engines.artifact import Manifest
from engines.neuron import bucket_file, package_version
from exporters.base import ExportConfig, Exporter, ExportInfo
from exporters.wrap import output_name, wrap

log = logging.getLogger(__name__)

DEFAULT_SEQS = (128, 256, 512)


def default_buckets(cfg: ExportConfig) -> list[tuple[int, int]]:
    """cfg.buckets, else {batch min, opt, max} x {128, 256, 512 clipped to seq max}, sorted."""
    if cfg.buckets:
        return sorted({(int(b), int(s)) for b, s in cfg.buckets})
    seq_max = cfg.seq_range[2]
    seqs = {min(s, seq_max) for s in DEFAULT_SEQS}
    return sorted({(b, s) for b in set(cfg.batch_range) for s in seqs})


def compiler_args(precision: str) -> list[str]:
    """neuronx-cc flags for a precision; fp32 says "none" because older compilers cast by default."""
    if precision == "bf16":
        # matmult only: the matrix engine runs bf16 while softmax/layernorm stay fp32
        return ["--auto-cast", "matmult", "--auto-cast-type", "bf16"]
    if precision == "fp32":
        return ["--auto-cast", "none"]
    raise ConfigError(f"--format neuron supports --precision fp32, bf16; got {precision!r}")


class NeuronExporter(Exporter):
    format = "neuron"
    engine = "neuron"
    precisions = ("fp32", "bf16")
    export_attn = "eager"

    def check(self, cfg: ExportConfig) -> None:
        super().check(cfg)
        if not cfg.spec.is_text:
            raise ConfigError(
                f"--format neuron exports text models; {cfg.model} is {cfg.spec.task}"
            )
        for b, s in default_buckets(cfg):
            if b < 1 or s < 1 or s > cfg.spec.max_seq_len:
                raise ConfigError(
                    f"bucket {b}x{s} is invalid for {cfg.model}: batch >= 1 and "
                    f"1 <= seq <= {cfg.spec.max_seq_len}"
                )
        # via the module so tests (and users) see one definition of both checks
        neuron_engine.import_neuronx()
        neuron_engine.require_device()

    def widen(self, cfg: ExportConfig, m: Manifest) -> ExportConfig | None:
        """Exact buckets, as for vision: a batch padded into a bigger bucket would be measured at
        that bucket's cost, not at the batch size the row reports."""
        have = {(int(b), int(s)) for b, s in m.shape_profiles.get("buckets", [])}
        want = set(default_buckets(cfg))
        return None if want <= have else replace(cfg, buckets=tuple(sorted(have | want)))

    def export(self, cfg: ExportConfig, model: Any, tokenizer: Any, out_dir: Path) -> ExportInfo:
        neuronx = neuron_engine.import_neuronx()
        import torch

        output = output_name(cfg.spec.task)
        # fp32 weights in: the compiler's auto-cast flags are the one place precision is set
        wrapper = wrap(model.float().eval(), cfg.spec.task)
        args = compiler_args(cfg.precision)
        buckets = default_buckets(cfg)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for b, s in buckets:
            log.info("neuronx-cc: compiling %s bucket batch %d x seq %d", cfg.model, b, s)
            ids = torch.zeros((b, s), dtype=torch.long)
            mask = torch.ones((b, s), dtype=torch.long)
            # one masked position: transformers drops an all-ones mask outside torch.jit/dynamo
            # tracing, and torch-xla tracing is not detected, so the NEFF would ignore padding
            if s > 1:
                mask[:, -1] = 0
            with torch.no_grad():
                traced = neuronx.trace(wrapper, (ids, mask), compiler_args=args)
            torch.jit.save(traced, str(out_dir / bucket_file(b, s)))
        versions = {
            "torch": torch.__version__,
            "torch-neuronx": package_version("torch-neuronx", neuronx),
            "neuronx-cc": package_version("neuronx-cc", _neuronxcc()),
        }
        return ExportInfo(
            input_names=list(neuron_engine.INPUT_NAMES),
            output_names=[output],
            shape_profiles={"buckets": [[b, s] for b, s in buckets]},
            hardware={"device": "inf2", "neuron_cores": neuron_engine.visible_neuron_cores()},
            tool_versions={k: v for k, v in versions.items() if v},
            details={"compiler_args": args, "data_parallel": True},
        )


def _neuronxcc() -> Any:
    try:
        import neuronxcc
    except ImportError:
        return None
    return neuronxcc
