"""Building the torch model of a spec.

A model is built, in order of preference, from an explicit local directory, the local Hugging
Face cache, the Hub (only when it is reachable), or its architecture config alone with random
weights. Whatever was used is recorded (`weights=pretrained|local|random`) and travels into
every result row.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from core.environment import flag, var
from core.errors import ConfigError, EngineError, require
from engines.models.specs import WEIGHTS, ModelSpec, transformers_module

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 2.0) -> bool:
    """True when the Hub answers a TCP connect; honours HF_HUB_OFFLINE. Never hangs."""
    if flag("HF_HUB_OFFLINE") or flag("TRANSFORMERS_OFFLINE"):
        return False
    host = urlparse(var("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        with socket.create_connection((host or "huggingface.co", 443), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass
class LoadedModel:
    model: Any
    weights: str  # pretrained | local | random
    source: str  # hub id, directory, or "config:<spec>"


def load_model(
    spec: ModelSpec,
    *,
    weights: str = "auto",
    model_path: str | None = None,
    attn: str = "sdpa",
    seed: int = 0,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Build the torch model for a spec, falling back as the module docstring says.

    A folder spec loads from its folder; `trust_remote_code` reaches transformers only when set.
    """
    if weights not in WEIGHTS:
        raise ConfigError(f"--weights must be one of {WEIGHTS}, got {weights!r}")
    if spec.arch_config.get("backend") == "colpali":
        return _load_colpali(spec, weights=weights, model_path=model_path, attn=attn)
    tf = transformers_module()
    if spec.task == "vision-embedding":
        auto = tf.ColQwen2ForRetrieval
    elif spec.task == "classification":
        auto = tf.AutoModelForSequenceClassification
    else:
        auto = tf.AutoModel
    kw: dict[str, Any] = dict(attn_implementation=attn)
    if trust_remote_code:
        kw["trust_remote_code"] = True
    if weights != "random":
        if model_path:
            if not os.path.isdir(model_path):
                raise ConfigError(f"--model-path {model_path!r} is not a directory")
            return LoadedModel(_from_folder(auto, spec, model_path, kw), "local", model_path)
        if spec.source:
            model = _from_folder(auto, spec, spec.source, kw)
            return LoadedModel(model, spec.weights, spec.hub_id or spec.source)
        if spec.hub_id:
            try:  # the local HF cache first: works offline, never touches the network
                m = auto.from_pretrained(
                    spec.hub_id, revision=spec.revision, local_files_only=True, **kw
                )
                return LoadedModel(m, "pretrained", spec.hub_id)
            except (OSError, ValueError):
                pass
            if hub_reachable():
                try:
                    m = auto.from_pretrained(spec.hub_id, revision=spec.revision, **kw)
                except (OSError, ValueError) as e:
                    raise EngineError(
                        f"could not download {spec.hub_id}: {str(e).splitlines()[0]}; "
                        "pass --model-path DIR or --weights random"
                    ) from e
                return LoadedModel(m, "pretrained", spec.hub_id)
            if weights == "pretrained":
                raise EngineError(
                    f"{spec.hub_id} is not in the local cache and the Hub is unreachable; "
                    "pass --model-path DIR or --weights random"
                )
            log.warning(
                "Hub unreachable and %s not cached: building %s from its config with RANDOM weights",
                spec.hub_id,
                spec.name,
            )
        elif weights == "pretrained":
            raise EngineError(
                f"model {spec.name!r} has no pretrained weights; use --weights random"
            )
    import torch

    torch.manual_seed(seed)  # identical random weights in every copy and every run
    model = (
        auto.from_config(spec.build_config(), **kw)
        if spec.is_text
        else auto(_with_attn(spec.build_config(), attn))
    )
    return LoadedModel(model, "random", f"config:{spec.name}")


def _from_folder(auto, spec: ModelSpec, folder: str, kw: dict[str, Any]):
    """`auto.from_pretrained(folder)`, with the architecture named in any failure (one line)."""
    if spec.arch_config.get("auto_map") and not kw.get("trust_remote_code"):
        raise EngineError(
            f"{folder}: architecture {spec.architecture or spec.family} ships its own code "
            "(auto_map); pass --trust-remote-code if you trust it"
        )
    try:
        return auto.from_pretrained(folder, **kw)
    except (OSError, ValueError, KeyError, ImportError) as e:
        what = spec.architecture or spec.family
        raise EngineError(f"could not load {what} from {folder}: {str(e).splitlines()[0]}") from e


def _with_attn(config, attn: str):
    # ColQwen2ForRetrieval has no auto class for from_config; set the attention on the config
    config._attn_implementation = attn
    config.vlm_config._attn_implementation = attn
    return config


def colpali_module():
    """colpali-engine's models module (the `colpali` extra), or a MissingDependency."""
    return require("colpali_engine.models", "colpali-engine", "colpali")


def _load_colpali(spec: ModelSpec, *, weights: str, model_path: str | None, attn: str):
    """colpali-engine's ColQwen2 (optional extra); pretrained or local weights only."""
    if weights == "random":
        raise EngineError(
            f"{spec.name} loads colpali-engine checkpoints only; for config-only random "
            "weights use --model colqwen2 (transformers-native)"
        )
    cm = colpali_module()
    import torch

    src = model_path or spec.hub_id
    local = bool(model_path) or not hub_reachable()
    try:
        model = cm.ColQwen2.from_pretrained(
            src, torch_dtype=torch.float32, attn_implementation=attn, local_files_only=local
        )
    except (OSError, ValueError) as e:
        raise EngineError(
            f"could not load {src} with colpali-engine: {str(e).splitlines()[0]}; "
            "it needs the Hub or a local copy (--model-path)"
        ) from e
    return LoadedModel(model, "local" if model_path else "pretrained", src)
