"""Export flow: build the eager model, write the artifact, gate it on parity, reuse it if cached."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import BillionbenchError, ConfigError
from engines.artifact import MANIFEST, ArtifactError, Manifest, verify, write_manifest
from engines.base import fields_from
from engines.models import load_model, load_tokenizer
from engines.registry import create_engine, engine_class
from engines.vision import budget_for_buckets
from exporters.base import ExportConfig, exporter_class
from exporters.parity import bucket_shapes, compare, eager_reference

log = logging.getLogger(__name__)


def artifact_dir(root: str | Path, cfg: ExportConfig) -> Path:
    """Where the on-demand cache keeps an artifact: artifacts/<model>/<format>-<prec>[-var]-<hw>."""
    name = "-".join(x for x in (cfg.format, cfg.precision, cfg.variant, cfg.hw) if x)
    return Path(root) / cfg.spec.cache_name / name


def expectation(cfg: ExportConfig, exporter=None) -> dict[str, Any]:
    """Manifest fields a cached artifact must carry to be reused for `cfg`."""
    want: dict[str, Any] = {
        "model": cfg.spec.ref,
        "format": cfg.format,
        "precision": cfg.precision,
        "variant": cfg.variant,
    }
    hw = (exporter or exporter_class(cfg.format)()).expected_hardware(cfg)
    if hw is not None:
        want["hardware"] = hw
    return want


def ensure_artifact(cfg: ExportConfig, exporter=None) -> tuple[Manifest, bool]:
    """Reuse `cfg.out` when its manifest matches, it holds the shapes `cfg` needs and its weights
    are what `cfg` asks; else export (widened to keep the shapes it held).

    Returns (manifest, reused).
    """
    exporter = exporter or exporter_class(cfg.format)()
    try:
        m = verify(cfg.out, expectation(cfg, exporter))
    except ArtifactError:
        return export(cfg, exporter, force=True), False
    wider = exporter.widen(cfg, m)
    if wider is not None:
        # re-export with the shapes it had plus the new ones, so the cache only grows
        return export(wider, exporter, force=True), False
    if cfg.weights in ("auto", m.weights):
        return m, True
    return export(cfg, exporter, force=True), False


def check_out(out: Path, force: bool) -> None:
    """Refuse, in one line, an --out that is a file, someone else's folder, or (without
    --force) an existing artifact: an export never deletes what is not ours to replace."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; pick a folder path")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise ConfigError(
                f"--out {out} is a non-empty folder that is not a billionbench artifact (no "
                f"{MANIFEST}); refusing to touch it: pick a new or empty folder"
            )
        if not force:
            raise ConfigError(
                f"--out {out} already holds an artifact; pass --force to replace it (the old "
                "one is kept until the new one is complete)"
            )


def _staging(out: Path) -> Path:
    """A fresh folder beside `out` to build into (never a name a user's folder could have)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as e:
        raise ConfigError(f"cannot write an artifact at {out}: {e.strerror}") from None


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the finished artifact at `out`; an old one goes only once the new one is in place."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def export(cfg: ExportConfig, exporter=None, *, force: bool = False) -> Manifest:
    """Write an artifact folder at `cfg.out` (atomically) and return its manifest.

    An existing artifact at `cfg.out` is replaced only with `force`; anything else is refused.
    """
    exporter = exporter or exporter_class(cfg.format)()
    exporter.check(cfg)  # missing library / hardware fails here, before any model work
    spec = cfg.spec
    out = Path(cfg.out)
    check_out(out, force)
    tmp = _staging(out)
    try:
        loaded = load_model(
            spec,
            weights=cfg.weights,
            model_path=cfg.model_path,
            attn=exporter.export_attn,
            seed=cfg.seed,
            trust_remote_code=cfg.trust_remote_code,
        )
        tok = load_tokenizer(spec, cfg.model_path, cfg.trust_remote_code)
        t0 = time.perf_counter()
        info = exporter.export(cfg, loaded.model.eval(), tok.tokenizer, tmp)
        seconds = time.perf_counter() - t0
        source, weights = loaded.source, loaded.weights
        del loaded  # free the fp32 weights before parity loads two more copies
        # identity from the spec and the config, what was written from the export's info
        manifest = fields_from(
            Manifest,
            spec,
            cfg,
            info,
            parity=None,
            model=spec.ref,  # the registry name, or the folder / Hub id engines ask for
            model_id=source,
            weights=weights,
            tokenizer=tok.source,
            export_seconds=round(seconds, 2),
        )
        write_manifest(tmp, manifest)
        own = info.parity
        if cfg.skip_parity:
            manifest.parity = {"passed": None, "skipped": "--skip-parity"}
        else:
            manifest.parity = (
                own
                if own is not None
                else run_parity(cfg, exporter.engine, tmp, exporter.vision_buckets(cfg))
            )
        write_manifest(tmp, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_in(tmp, out)
    return manifest


def run_parity(
    cfg: ExportConfig, engine_name: str, artifact: Path, vision_buckets=None
) -> dict[str, Any]:
    """Load the fresh artifact with its engine and compare it with eager fp32.

    A fixed-size vision artifact is compared at exactly its buckets' shapes, under a resize
    budget that keeps those image sizes unchanged.
    """
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        return {"passed": None, "skipped": "needs a CUDA GPU to run the export"}
    extra: dict[str, Any] = {}
    if vision_buckets is not None:
        budget = budget_for_buckets(vision_buckets)
        extra = dict(min_pixels=budget.min_pixels, max_pixels=budget.max_pixels)
    ref_cfg = eager_reference(cfg, **extra)
    cand_cfg = replace(
        ref_cfg,
        engine=engine_name,
        precision=cfg.precision,
        device=cfg.device,
        artifact=str(artifact),
        variant=cfg.variant,
        options=engine_class(engine_name).Options.from_values(extra),
    )
    try:
        with create_engine(ref_cfg) as ref, create_engine(cand_cfg) as cand:
            if vision_buckets is None:
                result = compare(ref, cand, cfg.precision)
            else:
                shapes = bucket_shapes(vision_buckets)
                result = compare(ref, cand, cfg.precision, vision_shapes=shapes)
    except BillionbenchError as e:
        return {"passed": False, "failures": [f"could not run the export: {e}"]}
    if not result["passed"]:
        log.warning("parity FAILED for %s: %s", artifact, "; ".join(result["failures"]))
    return result
