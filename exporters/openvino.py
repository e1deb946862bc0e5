"""OpenVINO IR export (fp32, bf16, int8 through NNCF) with dynamic batch and sequence axes.

The eager model is converted straight from PyTorch (`ov.convert_model` with example inputs),
which keeps both axes dynamic, and saved uncompressed: `ov.save_model` would otherwise store
the weights as fp16 and an "fp32" artifact would not be fp32.

int8 recipes (`--variant`):
  ""         static post-training quantization (`nncf.quantize`, ModelType.TRANSFORMER): int8
             weights and calibrated int8 activations (`exporters.calibration` texts) in every
             MatMul but the feed-forward down projections (`FFN_DOWN_MODULES`), which get int8
             weights only (`nncf.compress_weights`); the CPU plugin quantizes their
             activations per call in groups of 32 channels.
  "weights"  weight-only int8 (`nncf.compress_weights`, INT8_ASYM): no calibration; the
             activations stay fp32 (the CPU plugin may quantize them per call).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from core.errors import ConfigError, EngineError, require
from exporters.base import ExportConfig, Exporter, ExportInfo
from exporters.calibration import calibration_batches, calibration_record, ffn_down_pattern
from exporters.wrap import INPUT_NAMES, example_inputs, output_name, wrap

log = logging.getLogger(__name__)

IR_FILE = "model.xml"  # with model.bin beside it


def import_openvino():
    return require("openvino", "openvino", "openvino")


def import_nncf():
    return require("nncf", "nncf", "openvino")


def convert(model: Any, task: str):
    """The eager model as an OpenVINO model with dynamic [batch, sequence] inputs, its output
    named as the ONNX artifacts name theirs."""
    import torch

    ov = import_openvino()
    example = dict(zip(INPUT_NAMES, example_inputs(), strict=True))
    try:
        with torch.no_grad():
            ov_model = ov.convert_model(wrap(model, task), example_input=example)
    except Exception as e:
        raise EngineError(f"OpenVINO conversion failed: {str(e).splitlines()[0]}") from e
    ov_model.outputs[0].get_tensor().set_names({output_name(task)})
    return ov_model


def quantize_static(ov_model: Any, cfg: ExportConfig, tokenizer: Any) -> tuple[Any, dict]:
    """NNCF post-training quantization on calibration texts; returns (model, recipe)."""
    nncf = import_nncf()
    batches = calibration_batches(cfg.spec, tokenizer)
    weight_only = ffn_down_matmuls(ov_model)
    if not weight_only:
        log.warning("static int8: no FFN down projection found in %s", cfg.model)
    t0 = time.perf_counter()
    quantized = nncf.quantize(
        ov_model,
        nncf.Dataset(batches),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(batches),
        ignored_scope=nncf.IgnoredScope(names=weight_only, validate=False),
    )
    # the ignored MatMuls (and the embeddings) still get int8 weights
    quantized = nncf.compress_weights(quantized, mode=nncf.CompressWeightsMode.INT8_ASYM)
    recipe = {
        "method": "static (nncf.quantize, ModelType.TRANSFORMER), then compress_weights INT8_ASYM",
        "weights": "int8 symmetric per channel; weight-only ones and embeddings int8 asymmetric",
        "activations": "int8, calibrated",
        "weight_only": "feed-forward down projections: activations quantized per call by the "
        "CPU plugin",
        "weight_only_nodes": len(weight_only),
        "calibration": calibration_record(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return quantized, recipe


def ffn_down_matmuls(ov_model: Any) -> list[str]:
    """Friendly names of the FFN down projection MatMuls (`FFN_DOWN_MODULES`)."""
    pattern = ffn_down_pattern(".")
    return [
        op.get_friendly_name()
        for op in ov_model.get_ops()
        if op.get_type_name() == "MatMul" and pattern.search(op.get_friendly_name())
    ]


def compress_weights(ov_model: Any) -> tuple[Any, dict[str, Any]]:
    nncf = import_nncf()
    compressed = nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    return compressed, {
        "method": "weight-only (nncf.compress_weights INT8_ASYM)",
        "weights": "int8 asymmetric, per output channel",
        "activations": "fp32 (the CPU plugin may quantize them per call)",
    }


class OpenVinoExporter(Exporter):
    format = "openvino"
    engine = "openvino"
    precisions = ("fp32", "bf16", "int8")  # bf16: the fp32 IR, run with bf16 execution
    variants = ("", "weights")
    export_attn = "eager"

    def check(self, cfg: ExportConfig) -> None:
        super().check(cfg)
        if cfg.variant and cfg.precision != "int8":
            raise ConfigError(
                f"--variant {cfg.variant} is an int8 recipe; use it with --precision int8"
            )
        import_openvino()
        if cfg.precision == "int8":
            import_nncf()

    def export(self, cfg: ExportConfig, model: Any, tokenizer: Any, out_dir: Path) -> ExportInfo:
        ov = import_openvino()
        ov_model = convert(model, cfg.spec.task)
        details: dict[str, Any] = {"converter": "openvino.convert_model (from PyTorch)"}
        versions = {"openvino": ov.__version__}
        if cfg.precision == "int8":
            nncf = import_nncf()
            versions["nncf"] = nncf.__version__
            if cfg.variant == "weights":
                ov_model, details["quantization"] = compress_weights(ov_model)
            else:
                ov_model, details["quantization"] = quantize_static(ov_model, cfg, tokenizer)
        ov.save_model(ov_model, str(out_dir / IR_FILE), compress_to_fp16=False)
        out = output_name(cfg.spec.task)
        axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
        axes[out] = (
            {0: "batch"} if cfg.spec.task == "classification" else {0: "batch", 1: "sequence"}
        )
        return ExportInfo(
            input_names=list(INPUT_NAMES),
            output_names=[out],
            dynamic_axes=axes,
            shape_profiles={"dynamic": True},
            hardware={"portable": True, "target_device": cfg.device},
            tool_versions=versions,
            details=details,
        )
