"""torch.export + AOTInductor: a `.pt2` package with dynamic batch and sequence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import EngineError, HardwareMismatch
from exporters.base import ExportConfig, Exporter, ExportInfo
from exporters.wrap import INPUT_NAMES, example_inputs, output_name, wrap

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class AotiExporter(Exporter):
    format = "aoti"
    engine = "aoti"
    precisions = ("fp32", "fp16", "bf16")
    export_attn = "sdpa"  # inductor lowers SDPA to its fused kernels

    def check(self, cfg: ExportConfig) -> None:
        super().check(cfg)
        import torch

        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise HardwareMismatch("an AOTInductor package for cuda must be built on a CUDA GPU")
        if cfg.device == "cpu" and cfg.precision == "fp16":
            raise HardwareMismatch("fp16 AOTInductor packages need a GPU; use --precision bf16")

    def expected_hardware(self, cfg: ExportConfig) -> dict[str, Any]:
        import torch

        return {"device": cfg.device, "torch": torch.__version__}

    def export(self, cfg: ExportConfig, model: Any, tokenizer: Any, out_dir: Path) -> ExportInfo:
        import torch
        from torch.export import Dim

        spec = cfg.spec
        dev = torch.device(cfg.device)
        module = wrap(model.to(device=dev, dtype=getattr(torch, _DTYPES[cfg.precision])), spec.task)
        lo, _, hi = cfg.seq_range
        batch = Dim("batch", min=1, max=4096)
        seq = Dim("sequence", min=min(lo, 2), max=max(hi, spec.max_seq_len))
        shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
        args = tuple(t.to(dev) for t in example_inputs())
        try:
            with torch.no_grad():
                ep = torch.export.export(module, args, dynamic_shapes=shapes)
                torch._inductor.aoti_compile_and_package(
                    ep, package_path=str(out_dir / "model.pt2")
                )
        except Exception as e:
            raise EngineError(f"AOTInductor export failed: {str(e).splitlines()[0]}") from e
        out = output_name(spec.task)
        return ExportInfo(
            input_names=list(INPUT_NAMES),
            output_names=[out],
            dynamic_axes={n: {"0": "batch", "1": "sequence"} for n in INPUT_NAMES},
            shape_profiles={"batch": [1, batch.max], "sequence": [seq.min, seq.max]},
            hardware=self.expected_hardware(cfg),
            tool_versions={"torch": torch.__version__},
            details={"exporter": "torch.export + aoti_compile_and_package"},
        )
