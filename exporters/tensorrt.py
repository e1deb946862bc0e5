"""TensorRT FP16 plans: ONNX export, then a TensorRT 10 build with one dynamic-shape profile.

A plan only runs on the GPU model and TensorRT version that built it, so the manifest records
both (see `engines.tensorrt.plan_compatible`) plus the equivalent `trtexec` command, which is
how to rebuild the plan on the target box from the kept `model.onnx`.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import ConfigError, EngineError, HardwareMismatch
from engines.artifact import Manifest
from engines.tensorrt import (
    PLAN_FILE,
    capturing_logger,
    current_hardware,
    import_tensorrt,
    plan_compatible,
)
from exporters.base import ExportConfig, Exporter, ExportInfo
from exporters.onnx import export_onnx_file

__all__ = [
    "TensorRTExporter",
    "current_hardware",
    "plan_compatible",
    "profile_shapes",
    "trtexec_command",
]

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
TIMING_CACHE = "timing.cache"

Shape = tuple[int, ...]


def profile_shapes(
    cfg: ExportConfig, input_names: list[str]
) -> dict[str, tuple[Shape, Shape, Shape]]:
    """(min, opt, max) shape of every [batch, seq] input, from the config's ranges."""
    (b_min, b_opt, b_max), (s_min, s_opt, s_max) = cfg.batch_range, cfg.seq_range
    return {name: ((b_min, s_min), (b_opt, s_opt), (b_max, s_max)) for name in input_names}


def _shape_spec(shapes: dict[str, tuple[Shape, Shape, Shape]], which: int) -> str:
    return ",".join(f"{n}:{'x'.join(str(d) for d in s[which])}" for n, s in shapes.items())


def trtexec_command(
    onnx_path: str | Path,
    plan_path: str | Path,
    shapes: dict[str, tuple[Shape, Shape, Shape]],
    workspace_gb: float,
    timing_cache: str | Path,
) -> str:
    """The `trtexec` line that builds the same plan (for rebuilding on the target GPU)."""
    q = shlex.quote
    return " ".join(
        [
            "trtexec",
            f"--onnx={q(str(onnx_path))}",
            f"--saveEngine={q(str(plan_path))}",
            "--fp16",
            f"--minShapes={_shape_spec(shapes, 0)}",
            f"--optShapes={_shape_spec(shapes, 1)}",
            f"--maxShapes={_shape_spec(shapes, 2)}",
            # trtexec reads an M suffix as MiB
            f"--memPoolSize=workspace:{int(workspace_gb * 1024)}M",
            f"--timingCacheFile={q(str(timing_cache))}",
        ]
    )


def _span(rng: tuple[int, int, int], lo: int, hi: int) -> tuple[int, int, int]:
    """A (min, opt, max) range covering both `rng` and lo..hi; opt stays the run's own."""
    return min(rng[0], lo), rng[1], max(rng[2], hi)


def _plan_bounds(m: Manifest) -> tuple[int, int, int, int] | None:
    """(batch min, batch max, seq min, seq max) every input of a TensorRT plan accepts."""
    profiles = [p for p in m.shape_profiles.values() if isinstance(p, dict) and "max" in p]
    if not profiles:
        return None
    return (
        max(p["min"][0] for p in profiles),
        min(p["max"][0] for p in profiles),
        max(p["min"][1] for p in profiles),
        min(p["max"][1] for p in profiles),
    )


class TensorRTExporter(Exporter):
    format = "trt"
    engine = "trt"
    precisions = ("fp16",)
    export_attn = "eager"

    def check(self, cfg: ExportConfig) -> None:
        super().check(cfg)
        if cfg.seq_range[2] > cfg.spec.max_seq_len:
            raise ConfigError(
                f"seq_range max {cfg.seq_range[2]} exceeds {cfg.model}'s max sequence length "
                f"{cfg.spec.max_seq_len}"
            )
        self._require_runtime()

    def widen(self, cfg: ExportConfig, m: Manifest) -> ExportConfig | None:
        """A plan runs only its profile's shapes: reused when the profile holds the run's batch
        range and longest sequence (shorter ones are padded up to its minimum), else rebuilt
        over both ranges."""
        bounds = _plan_bounds(m)
        if bounds is None:
            return cfg
        b_lo, b_hi, s_lo, s_hi = bounds
        if b_lo <= cfg.batch_range[0] and cfg.batch_range[2] <= b_hi and cfg.seq_range[2] <= s_hi:
            return None
        return replace(
            cfg,
            batch_range=_span(cfg.batch_range, b_lo, b_hi),
            seq_range=_span(cfg.seq_range, s_lo, s_hi),
        )

    def expected_hardware(self, cfg: ExportConfig) -> dict[str, Any] | None:
        # a cached plan is reused only on the same GPU model and TensorRT version; callers ask
        # this before check(), so the same one-line errors apply
        self._require_runtime()
        return current_hardware()

    @staticmethod
    def _require_runtime() -> None:
        trt = import_tensorrt()
        # TensorRT 11 removed weakly typed builds, and with them BuilderFlag.FP16
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise EngineError(
                f"TensorRT {trt.__version__} has no BuilderFlag.FP16 (removed in 11.x); "
                "install TensorRT 10: pip install 'tensorrt>=10,<11'"
            )
        import torch

        if not torch.cuda.is_available():
            raise HardwareMismatch(
                "TensorRT plans are built on and for an NVIDIA GPU; none is visible here — build "
                "on the target box (see the trtexec command in the manifest) or use --engine onnx"
            )

    @staticmethod
    def _use_timing_cache(config: Any, candidates: list[Path]) -> None:
        """Seed the build with the first saved timing cache found (out_dir, then cfg.out)."""
        # the caller builds into a fresh .partial folder, so the previous artifact's cache
        # at cfg.out is the one worth reusing on a re-export
        blob = next((p.read_bytes() for p in candidates if p.is_file()), b"")
        cache = config.create_timing_cache(blob)
        # ignore_mismatch=False: a cache from another GPU or TensorRT build is refused
        if cache is None or not config.set_timing_cache(cache, False):
            log.warning("saved TensorRT timing cache does not fit this GPU/version; starting empty")
            config.set_timing_cache(config.create_timing_cache(b""), False)

    def export(self, cfg: ExportConfig, model: Any, tokenizer: Any, out_dir: Path) -> ExportInfo:
        trt = import_tensorrt()
        out_dir = Path(out_dir)
        onnx_path, plan_path = out_dir / ONNX_FILE, out_dir / PLAN_FILE
        cache_path = out_dir / TIMING_CACHE
        input_names, output_names, dynamic_axes = export_onnx_file(
            model, cfg.spec, onnx_path, cfg.opset
        )
        shapes = profile_shapes(cfg, input_names)

        logger = capturing_logger(trt)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10 networks are always explicit-batch
        parser = trt.OnnxParser(network, logger)
        # parse_from_file resolves external-data tensors next to the .onnx file
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise EngineError(
                f"TensorRT could not parse {onnx_path}: " + " | ".join(errors or logger.errors)
            )

        config = builder.create_builder_config()
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_memory_pool_limit(
            trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gb * (1 << 30))
        )
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
        self._use_timing_cache(config, [cache_path, Path(cfg.out) / TIMING_CACHE])

        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError(
                "TensorRT build failed: " + (" | ".join(logger.errors) or "no error was logged")
            )
        # IHostMemory exposes the buffer protocol: written without an extra copy
        with open(plan_path, "wb") as f:
            f.write(plan)
        with open(cache_path, "wb") as f:
            f.write(config.get_timing_cache().serialize())

        hardware = current_hardware()
        return ExportInfo(
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dict(dynamic_axes),
            shape_profiles={
                n: {"min": list(lo), "opt": list(opt), "max": list(hi)}
                for n, (lo, opt, hi) in shapes.items()
            },
            hardware=hardware,
            tool_versions={"tensorrt": trt.__version__},
            # file names relative to the artifact folder, so the line runs wherever it is copied
            details={
                "trtexec": trtexec_command(
                    ONNX_FILE, PLAN_FILE, shapes, cfg.workspace_gb, TIMING_CACHE
                ),
                "trtexec_cwd": "the artifact folder",
            },
        )
