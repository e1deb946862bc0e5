"""ONNX export (fp32 / fp16 / int8), optionally through ONNX Runtime's transformer optimizer."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

from core import contract
from core.errors import ConfigError, EngineError, MissingDependency
from engines.models import ModelSpec
from engines.vision import (
    VisionPipeline,
    bucket_name,
    bucket_pixels,
    budget_for_buckets,
    describe_buckets,
    encode_png,
)
from engines.vision import synthetic_page as page
from exporters.base import DEFAULT_IMAGE_BUCKETS, ExportConfig, Exporter, ExportInfo
from exporters.wrap import INPUT_NAMES, example_inputs, output_name, wrap

log = logging.getLogger(__name__)


def _require(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(package, "onnx") from e


def _trace(module, args, path: Path, inputs, outputs, opset: int, what: str, axes=None) -> None:
    """torch.onnx.export's TorchScript exporter (its graphs are the ones ONNX Runtime's
    transformer fusions match), with its tracer chatter silenced (HF's Python-side mask logic,
    a vision bucket's baked-in grid): parity checks the result. EngineError when it fails."""
    import torch

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
            )
    except Exception as e:
        raise EngineError(f"ONNX export of {what} failed: {str(e).splitlines()[0]}") from e


def export_onnx_file(model: Any, spec: ModelSpec, path: Path, opset: int = 17):
    """Write a plain ONNX graph with dynamic batch and sequence axes.

    Returns (input_names, output_names, dynamic_axes).
    """
    _require("onnx", "onnx")
    out = output_name(spec.task)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    axes[out] = {0: "batch"} if spec.task == "classification" else {0: "batch", 1: "sequence"}
    _trace(
        wrap(model, spec.task), example_inputs(), path, INPUT_NAMES, [out], opset, spec.name, axes
    )
    return list(INPUT_NAMES), [out], axes


VISION_INPUTS = list(contract.VISION_MODEL_INPUTS)
VISION_OUTPUT = contract.EMBEDDINGS
BUCKETS_NOTE = (
    "fixed shapes: only these (batch, image grid) buckets run; other batch sizes or image sizes "
    "are refused, never resized"
)


def vision_bucket_file(bucket) -> str:
    """Relative path of one bucket's graph in an artifact folder (one folder each, so the
    external-data files of >2 GB models never collide)."""
    return f"buckets/{bucket_name(bucket)}/model.onnx"


def export_vision_bucket(model: Any, processor: Any, spec: ModelSpec, bucket, path: Path, opset):
    """Trace ColQwen2 at one fixed (batch, grid) with the legacy exporter and write `path`.

    The example batch holds `batch` different pages of the one size the processor keeps at this
    grid; the traced graph is valid only for exactly these shapes and grid values.
    """
    import copy

    import torch

    b, gh, gw = bucket
    w, h = bucket_pixels(gh, gw)
    # a private processor: the pipeline sets its resize budget, and the shared one is cached
    pipe = VisionPipeline(spec, copy.deepcopy(processor), budget_for_buckets([bucket]))
    batch = pipe.preprocess([encode_png(page(w, h, seed=100 + i)) for i in range(b)])
    grid = batch.inputs["image_grid_thw"]
    if not (grid == [1, gh, gw]).all():  # pragma: no cover - the resize rule changed
        raise EngineError(f"a {w}x{h} page gave image grid {grid.tolist()}, not 1x{gh}x{gw}")

    class Embedder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, pixel_values, image_grid_thw):
            out = self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                pixel_values=pixel_values,
                image_grid_thw=image_grid_thw,
            )
            return out if isinstance(out, torch.Tensor) else out.embeddings

    args = tuple(torch.from_numpy(batch.inputs[k]) for k in VISION_INPUTS)
    path.parent.mkdir(parents=True, exist_ok=True)
    what = f"{spec.name} bucket batch {b} x grid {gh}x{gw}"
    _trace(Embedder(model).eval(), args, path, VISION_INPUTS, [VISION_OUTPUT], opset, what)
    return {k: list(v.shape) for k, v in batch.inputs.items()}


def _heads_hidden(spec: ModelSpec) -> tuple[int, int]:
    c = spec.arch_config
    return (
        c.get("n_heads", c.get("num_attention_heads", 12)),
        c.get("dim", c.get("hidden_size", 768)),
    )


def optimize(src: Path, dst: Path, spec: ModelSpec, use_gpu: bool) -> dict[str, int]:
    """Run ORT's transformer optimizer; return the fusion counts it achieved."""
    _require("onnxruntime", "onnxruntime")
    from onnxruntime.transformers import optimizer

    heads, hidden = _heads_hidden(spec)
    opt = optimizer.optimize_model(
        str(src),
        model_type="bert",
        num_heads=heads,
        hidden_size=hidden,
        opt_level=0,
        use_gpu=use_gpu,
    )
    counts = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
    opt.save_model_to_file(str(dst))
    return counts


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags /proc/cpuinfo lists for this CPU (empty where unreadable)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_vnni() -> bool:
    """True when the CPU has int8 dot-product instructions (AVX512-VNNI or AVX-VNNI)."""
    return not cpu_flags().isdisjoint({"avx512_vnni", "avx_vnni"})


def int8_exclusions(model: Any, layers: int) -> list[str]:
    """MatMul nodes that stay fp32: activation x activation products (the softmax's input and
    its product with V) and the last layer's projections, whose error reaches the output
    unattenuated by a later LayerNorm."""
    inits = {i.name for i in model.graph.initializer}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    weighted = [n for n in matmuls if any(i in inits for i in n.input)]
    keep = [n.name for n in matmuls if not any(i in inits for i in n.input)]
    per_layer = len(weighted) // max(layers, 1)
    # nodes are topologically sorted, so the last layer's projections come last
    keep += [n.name for n in weighted[len(weighted) - per_layer :]] if per_layer else []
    return keep


def quantize_int8(src: Path, dst: Path, spec: ModelSpec) -> dict[str, Any]:
    """Dynamic int8 that keeps a trained model within the int8 parity gate; returns the recipe.

    Weights: symmetric, per output channel. Activations: quantized per call (dynamic). Only
    weight MatMuls are quantized (embeddings stay fp32), minus `int8_exclusions`. On CPUs
    without VNNI, `reduce_range` (7-bit weights) avoids the u8 x s8 saturation of AVX2 kernels.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    c = spec.arch_config
    layers = int(c.get("n_layers", c.get("num_hidden_layers", 1)))
    exclude = int8_exclusions(model, layers)
    reduce_range = not has_vnni()
    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=reduce_range,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=exclude,
        # fused contrib ops defeat ONNX shape inference; their outputs are float
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
    )
    return {
        "method": "dynamic",
        "weights": "QInt8, symmetric, per channel",
        "op_types": ["MatMul"],
        "fp32_nodes": len(exclude),
        "fp32_kept": "activation x activation MatMuls, the last layer, embeddings",
        "reduce_range": reduce_range,
    }


def ffn_down_matmuls(model: Any) -> list[str]:
    """The feed-forward down projections (`exporters.calibration.FFN_DOWN_MODULES`), which the
    static recipe keeps fp32."""
    from exporters.calibration import ffn_down_pattern

    pattern = ffn_down_pattern("/")
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and pattern.search(n.name)]


def quantize_static_int8(src: Path, dst: Path, spec: ModelSpec, tokenizer: Any) -> dict[str, Any]:
    """Static (calibrated) QDQ int8 of the weight MatMuls; returns the recipe.

    Activations: uint8, ranges from MinMax calibration on `exporters.calibration` texts; the
    MatMul outputs stay float. Weights: int8 symmetric per channel. The FFN down projections stay fp32
    (`ffn_down_matmuls`), and so do the fused Attention ops and the embeddings. Shapes are
    inferred symbolically first, since the fused contrib ops defeat ONNX's own inference.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    from exporters.calibration import calibration_batches, calibration_record

    model = SymbolicShapeInference.infer_shapes(onnx.load(str(src)), auto_merge=True)
    shaped = dst.with_name("shaped.onnx")
    onnx.save(model, str(shaped))
    exclude = ffn_down_matmuls(model)
    if not exclude:
        log.warning("static int8: no FFN down projection found in %s; all MatMuls quantized", src)
    batches = calibration_batches(spec, tokenizer)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(batches)

        def get_next(self):
            return next(self.feeds, None)

    t0 = time.perf_counter()
    try:
        quantize_static(
            str(shaped),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={
                "DefaultTensorType": onnx.TensorProto.FLOAT,
                # a MatMul's float output feeds the bias add and the residual: re-quantizing
                # it costs quality (min cosine 0.989 -> 0.992 on prose) and saves nothing
                "OpTypesToExcludeOutputQuantization": ["MatMul"],
            },
        )
    finally:
        shaped.unlink(missing_ok=True)
    return {
        "method": "static (QDQ, MinMax calibration)",
        "weights": "QInt8, symmetric, per channel",
        "activations": "QUInt8, calibrated (MatMul inputs only; outputs stay float)",
        "op_types": ["MatMul"],
        "fp32_nodes": len(exclude),
        "fp32_kept": "feed-forward down projections, fused Attention, embeddings",
        "calibration": calibration_record(),
        "seconds": round(time.perf_counter() - t0, 1),
    }


class OnnxExporter(Exporter):
    format = "onnx"
    engine = "onnx"
    precisions = ("fp32", "fp16", "int8")
    #: optimized: ORT transformer fusions; static: those fusions + calibrated (static) int8
    variants = ("", "optimized", "static")
    export_attn = "eager"  # eager attention exports as MatMul/Softmax that ORT can fuse
    tasks = ("classification", "embedding", "vision-embedding")  # vision: fixed-size buckets
    gpu_precisions = {
        "fp16": "fp16 ONNX targets GPUs (CPU kernels are fp32/int8): pass --device cuda, or use "
        "--precision int8 for CPU"
    }

    def check(self, cfg: ExportConfig) -> None:
        super().check(cfg)
        if cfg.precision == "int8" and cfg.device != "cpu":
            raise ConfigError("int8 dynamic quantization is a CPU recipe; use fp16 on GPUs")
        if cfg.variant == "static" and cfg.precision != "int8":
            raise ConfigError(
                "--variant static is the calibrated int8 recipe; use it with --precision int8 "
                "(--variant optimized gives the same fusions at fp32/fp16)"
            )
        if cfg.spec.task == "vision-embedding" and (cfg.precision, cfg.variant) != ("fp32", ""):
            raise ConfigError(
                "vision ONNX buckets are exported in fp32 only (no --variant, fp16 or int8: the "
                "ORT transformer optimizer and quantizer are not set up for ColQwen2)"
            )
        _require("onnx", "onnx")
        _require("onnxruntime", "onnxruntime")

    def vision_buckets(self, cfg: ExportConfig) -> list[tuple[int, int, int]] | None:
        if cfg.spec.task != "vision-embedding":
            return None
        return sorted(
            {tuple(int(x) for x in b) for b in cfg.image_buckets or DEFAULT_IMAGE_BUCKETS}
        )

    def export_vision(self, cfg: ExportConfig, model: Any, processor: Any, out_dir: Path):
        import onnx
        import onnxruntime

        buckets = self.vision_buckets(cfg)
        entries = []
        for bucket in buckets:
            log.info("ONNX: exporting %s bucket %s", cfg.model, describe_buckets([bucket]))
            rel = vision_bucket_file(bucket)
            shapes = export_vision_bucket(
                model, processor, cfg.spec, bucket, out_dir / rel, cfg.opset
            )
            entries.append(
                {
                    "bucket": list(bucket),
                    "batch": bucket[0],
                    "grid_thw": [1, bucket[1], bucket[2]],
                    "image_size": list(bucket_pixels(bucket[1], bucket[2])),
                    "file": rel,
                    "input_shapes": shapes,
                }
            )
        return ExportInfo(
            input_names=list(VISION_INPUTS),
            output_names=[VISION_OUTPUT],
            shape_profiles={"dynamic": False, "image_buckets": entries},
            hardware={"portable": True, "target_device": cfg.device},
            tool_versions={"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
            details={
                "exporter": "torch.onnx (TorchScript), one graph per bucket",
                "opset": cfg.opset,
                "buckets": describe_buckets(buckets),
                "only_these_sizes": BUCKETS_NOTE,
            },
        )

    def export(self, cfg: ExportConfig, model: Any, tokenizer: Any, out_dir: Path) -> ExportInfo:
        import onnx
        import onnxruntime

        spec = cfg.spec
        if spec.task == "vision-embedding":
            return self.export_vision(cfg, model, tokenizer, out_dir)
        final = out_dir / "model.onnx"
        raw = out_dir / "raw.onnx"
        inputs, outputs, axes = export_onnx_file(model, spec, raw, cfg.opset)
        details: dict[str, Any] = {"exporter": "torch.onnx (TorchScript)", "opset": cfg.opset}
        current = raw
        if cfg.variant in ("optimized", "static"):
            fused = out_dir / "fused.onnx"
            counts = optimize(raw, fused, spec, use_gpu=cfg.device == "cuda")
            details["fusions"] = counts
            missing = [k for k in ("Attention", "SkipLayerNormalization") if not counts.get(k)]
            if not counts:
                log.warning("ORT transformer optimizer fused NOTHING in %s", spec.name)
                details["fusion_warning"] = "the optimizer fused nothing"
            elif missing:
                details["fusion_warning"] = f"not fused: {', '.join(missing)}"
                log.warning(
                    "ORT optimizer on %s: %s fused, but no %s",
                    spec.name,
                    ", ".join(f"{k}={v}" for k, v in counts.items()),
                    ", ".join(missing),
                )
            current = fused
        if cfg.precision == "fp16":
            from onnxruntime.transformers.onnx_model import OnnxModel

            m = OnnxModel(onnx.load(str(current)))
            m.convert_float_to_float16(keep_io_types=True)
            m.save_model_to_file(str(final))
        elif cfg.variant == "static":
            details["quantization"] = quantize_static_int8(current, final, spec, tokenizer)
        elif cfg.precision == "int8":
            details["quantization"] = quantize_int8(current, final, spec)
        else:
            current.replace(final)
        for p in (raw, out_dir / "fused.onnx"):
            p.unlink(missing_ok=True)
        return ExportInfo(
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            shape_profiles={"dynamic": True},
            hardware={"portable": True, "target_device": cfg.device},
            tool_versions={"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
            details=details,
        )
