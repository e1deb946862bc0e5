"""Any model: a `ModelSpec` built from a folder's own files (a local directory or a Hub snapshot).

The folder says what the model is: `config.json` gives the task (a `*ForSequenceClassification`
with `id2label` classifies, anything else embeds), the labels, the size and the FLOPs;
sentence-transformers' `modules.json`, `1_Pooling/config.json` and `sentence_bert_config.json`
give the pooling, the normalisation and the maximum length, exactly as its authors run it.
Only JSON is read here: no code from the folder runs while the spec is built.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

from core.errors import ConfigError, EngineError
from engines.models.loading import hub_reachable
from engines.models.specs import MODELS, ModelSpec, transformers_module

# sentence-transformers' pooling modes -> ours; the others change the numbers, so they are refused
_POOLING_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_lasttoken": "last",
}
# decoder-style embedders (no Pooling module) read the last token, encoders their first
_LAST_TOKEN_TYPES = {"qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "gemma3", "phi3"}
# models whose position table holds 2 extra slots for the padding offset
_POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "longformer": 2}
_GENERIC_NAMES = {"model", "models", "checkpoint", "final", "best", "weights"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def get_spec(name: str) -> ModelSpec:
    """A registry name, a local model folder, or a Hub id -> its spec (one-line errors)."""
    if name in MODELS:
        return MODELS[name]
    if os.path.isdir(name):
        return spec_from_folder(os.path.abspath(name), "local", None)
    if _HUB_ID.match(name):
        return spec_from_folder(hub_snapshot(name), "pretrained", name)
    raise ConfigError(
        f"unknown model {name!r}: not a registry name, a local folder or a Hub id; "
        f"registry: {', '.join(sorted(MODELS))}"
    )


@functools.lru_cache(maxsize=32)
def hub_snapshot(repo_id: str) -> str:
    """The local folder of a Hub model: the HF cache first, the Hub only when it is reachable."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - a dependency of transformers
        raise EngineError("huggingface_hub is not installed; pass a local folder") from e
    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - any miss in the cache means "not here"
        pass
    if not hub_reachable():
        raise EngineError(
            f"{repo_id} is not in the local Hugging Face cache and the Hub is unreachable; "
            "pass a local folder (--model DIR)"
        )
    try:
        return snapshot_download(repo_id)
    except Exception as e:  # noqa: BLE001 - repository errors come in many types
        raise EngineError(f"could not download {repo_id}: {str(e).splitlines()[0]}") from e


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e


def served_name(ref: str) -> str:
    """The name a folder or Hub id is served and labelled under: its last part, sanitised.

    A generic last part (`.../minilm/model`, as packaged wheels ship it) takes its parent's name.
    """
    path = Path(ref.rstrip("/\\"))
    last = path.name
    if last.lower() in _GENERIC_NAMES and path.parent.name:
        last = path.parent.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", last).strip("-.") or "model"


def sentence_transformers_modules(folder: Path) -> tuple[str | None, bool, int | None]:
    """(pooling, normalise, max_seq_length) from a sentence-transformers folder; Nones if absent."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None, False, None
    pooling, normalize = None, False
    for module in _read_json(modules_file):
        kind = module.get("type", "").rsplit(".", 1)[-1]
        if kind == "Pooling":
            pooling = _pooling_mode(folder / module.get("path", "1_Pooling") / "config.json")
        elif kind == "Normalize":
            normalize = True
        elif kind != "Transformer":
            raise EngineError(
                f"{folder}: sentence-transformers module {kind} ({module.get('type')}) is not "
                "supported; supported: Transformer, Pooling (cls, mean, last token), Normalize"
            )
    st_config = folder / "sentence_bert_config.json"
    max_len = _read_json(st_config).get("max_seq_length") if st_config.is_file() else None
    return pooling, normalize, max_len


def _pooling_mode(config_file: Path) -> str:
    cfg = _read_json(config_file)
    on = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
    if len(on) != 1 or on[0] not in _POOLING_MODES:
        raise EngineError(
            f"{config_file}: pooling {', '.join(on) or 'none'} is not supported; "
            "supported: cls token, mean tokens, last token"
        )
    return _POOLING_MODES[on[0]]


def _max_len(folder: Path, config: dict[str, Any], st_max: int | None) -> int:
    if st_max:
        return int(st_max)
    limits = []
    tok_config = folder / "tokenizer_config.json"
    if tok_config.is_file():
        n = _read_json(tok_config).get("model_max_length")
        if isinstance(n, int) and n < 1_000_000:  # transformers writes 1e30 for "no limit"
            limits.append(n)
    positions = config.get("max_position_embeddings", config.get("n_positions"))
    if positions:
        limits.append(int(positions) - _POSITION_OFFSET.get(config.get("model_type", ""), 0))
    return min(limits) if limits else 512


def _check_architecture(config: dict[str, Any], task: str, folder: Path) -> str:
    """The architecture class; a one-line error when transformers cannot build it for the task."""
    arch = (config.get("architectures") or [""])[0]
    model_type = config.get("model_type", "")
    if config.get("auto_map"):  # the folder's own code; loaded only with --trust-remote-code
        return arch or model_type
    from transformers.models.auto import modeling_auto

    table = (
        modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
        if task == "classification"
        else modeling_auto.MODEL_MAPPING_NAMES
    )
    if model_type not in table:
        raise EngineError(
            f"{folder}: architecture {arch or '?'} (model_type {model_type or '?'}) is not "
            f"supported for {task} by transformers {transformers_module().__version__}"
        )
    return arch or table[model_type]


@functools.lru_cache(maxsize=32)
def spec_from_folder(folder_path: str, weights: str, hub_id: str | None) -> ModelSpec:
    """Build a spec from the folder's config.json and sentence-transformers files."""
    folder = Path(folder_path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{folder} has no config.json: not a Hugging Face model folder")
    config = _read_json(config_file)
    arch = (config.get("architectures") or [""])[0]
    id2label = config.get("id2label") or {}
    classifies = arch.endswith("ForSequenceClassification") and bool(id2label)
    task = "classification" if classifies else "embedding"
    pooling, normalize, st_max = sentence_transformers_modules(folder)
    if pooling is None:
        pooling = "last" if config.get("model_type") in _LAST_TOKEN_TYPES else "cls"
    labels = tuple(str(id2label[k]) for k in sorted(id2label, key=int)) if classifies else ()
    if classifies and len(labels) < 2:
        raise EngineError(
            f"{folder}: {arch} has {len(labels)} output (a regression or cross-encoder head); "
            "only classifiers with >= 2 labels are supported"
        )
    dim = config.get("hidden_size", config.get("dim", config.get("d_model", 0)))
    return ModelSpec(
        name=served_name(hub_id or folder_path),
        task=task,
        hub_id=hub_id,
        family=config.get("model_type", "unknown"),
        pooling=pooling,
        normalize=normalize,
        num_labels=len(labels),
        labels=labels,
        dim=int(dim),
        max_seq_len=_max_len(folder, config, st_max),
        revision=folder.name if hub_id else "local",
        arch_config=config,
        source=folder_path,
        weights=weights,
        architecture=_check_architecture(config, task, folder),
    )


def folder_disagrees(spec: ModelSpec, folder: str) -> str | None:
    """How a folder's own files disagree with a registry spec given weights from it, or None.

    `--model bge-base --model-path DIR` keeps bge-base's pooling and name; when DIR says
    otherwise the user should hear it (and that `--model DIR` follows the folder).
    """
    try:
        own = get_spec(folder)
    except (ConfigError, EngineError):
        return None
    diffs = [
        f"{what} {mine!r} (the folder says {theirs!r})"
        for what, mine, theirs in (
            ("task", spec.task, own.task),
            ("pooling", spec.pooling, own.pooling),
            ("normalize", spec.normalize, own.normalize),
        )
        if mine != theirs
    ]
    if not diffs:
        return None
    return (
        f"--model {spec.name} with --model-path {folder} keeps {spec.name}'s "
        f"{', '.join(diffs)}; pass --model {folder} to run the folder as its authors do"
    )
