"""Model specs: one `ModelSpec` per supported model (pure data), the registry, tiny variants."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.errors import ConfigError, EngineError, MissingDependency
from engines.models.flops import colqwen2_flops, encoder_flops

TASKS = ("classification", "embedding", "vision-embedding")
# The fallback vision tokenizer puts Qwen2-VL's special tokens first, so their ids are fixed and
# config-only ColQwen2 builds use the same ids (random weights: only the shapes matter).
VISION_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
VISION_TOKEN_IDS = {t: i for i, t in enumerate(VISION_SPECIAL_TOKENS)}
POOLINGS = ("cls", "mean", "last", "none")
WEIGHTS = ("auto", "pretrained", "random")
#: what `--trust-remote-code` does, wherever a config takes it
TRUST_REMOTE_CODE = (
    "let transformers run Python code shipped in the model folder (auto_map); off by default, "
    "recorded in the row and the manifest"
)


def transformers_module():
    """The transformers module (a base dependency), or a MissingDependency."""
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - base dependency
        raise MissingDependency("transformers", "") from e
    return transformers


@dataclass(frozen=True)
class ModelSpec:
    """What a model is and how to build it; pure data."""

    name: str
    task: str
    hub_id: str | None
    family: str  # distilbert | bert | modernbert | colqwen2, or a folder's model_type
    pooling: str = "cls"
    normalize: bool = False
    num_labels: int = 0
    labels: tuple[str, ...] = ()
    dim: int = 0  # embedding size (or per-vector size for multi-vector models)
    multi_vector: bool = False
    max_seq_len: int = 512
    revision: str = "main"
    arch_config: dict[str, Any] = field(default_factory=dict)
    tiny: bool = False
    # specs built from a folder's own files (engines.models.auto): the folder the config,
    # weights and tokenizer come from, their provenance, and the architecture class
    source: str | None = None
    weights: str = ""  # local | pretrained (a Hub snapshot); empty for registry specs
    architecture: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(
                f"model {self.name!r}: task must be one of {TASKS}, got {self.task!r}"
            )
        if self.pooling not in POOLINGS:
            raise ConfigError(
                f"model {self.name!r}: pooling must be one of {POOLINGS}, got {self.pooling!r}"
            )
        if self.task == "classification" and self.num_labels < 2:
            raise ConfigError(f"model {self.name!r}: a classifier needs num_labels >= 2")
        if self.task != "classification" and self.dim <= 0:
            raise ConfigError(f"model {self.name!r}: an embedder needs dim > 0")

    @property
    def is_text(self) -> bool:
        return self.task in ("classification", "embedding")

    @property
    def cache_name(self) -> str:
        """A folder name for this model's artifacts: folders of the same name stay apart."""
        if not self.source:
            return self.name
        return f"{self.name}-{hashlib.sha256(self.source.encode()).hexdigest()[:8]}"

    @property
    def ref(self) -> str:
        """What `get_spec` takes to return this spec again: registry name, Hub id or folder."""
        return self.hub_id if self.source and self.hub_id else self.source or self.name

    def build_config(self):
        """The transformers config for config-only (random-weight) builds."""
        if self.source:  # a folder's own config.json
            return transformers_module().AutoConfig.from_pretrained(self.source)
        return self._registry_config()

    def _registry_config(self):
        tf = transformers_module()
        if self.family == "colqwen2":
            c = self.arch_config
            vlm = tf.Qwen2VLConfig(
                text_config=dict(
                    c["text"],
                    bos_token_id=VISION_TOKEN_IDS["<|endoftext|>"],
                    eos_token_id=VISION_TOKEN_IDS["<|im_end|>"],
                    pad_token_id=VISION_TOKEN_IDS["<|endoftext|>"],
                ),
                vision_config=dict(c["vision"]),
                image_token_id=VISION_TOKEN_IDS["<|image_pad|>"],
                video_token_id=VISION_TOKEN_IDS["<|video_pad|>"],
                vision_start_token_id=VISION_TOKEN_IDS["<|vision_start|>"],
                vision_end_token_id=VISION_TOKEN_IDS["<|vision_end|>"],
                tie_word_embeddings=c.get("tie_word_embeddings", False),
            )
            return tf.ColQwen2Config(vlm_config=vlm, embedding_dim=self.dim)
        cls = {
            "distilbert": tf.DistilBertConfig,
            "bert": tf.BertConfig,
            "modernbert": tf.ModernBertConfig,
        }.get(self.family)
        if cls is None:
            raise EngineError(
                f"model {self.name!r} ({self.family}) has no config builder; "
                "known families: distilbert, bert, modernbert, colqwen2"
            )
        kw = dict(self.arch_config)
        if self.task == "classification":
            kw["num_labels"] = self.num_labels
            kw["id2label"] = dict(enumerate(self.labels))
            kw["label2id"] = {v: k for k, v in enumerate(self.labels)}
        return cls(**kw)

    def flops_per_input(
        self, tokens: float, tokens_sq: float | None = None, **vision: float
    ) -> float:
        """Useful forward FLOPs for one input of `tokens` tokens (see `engines.models.flops`).

        `tokens_sq` is E[T^2] when averaging; vision models also take `visual_tokens` and
        `visual_tokens_sq`.
        """
        if self.family == "colqwen2":
            return colqwen2_flops(self.arch_config, self.dim, tokens, tokens_sq, **vision)
        return encoder_flops(self.family, self.arch_config, tokens, tokens_sq)


def _tiny(spec: ModelSpec, arch: dict[str, Any]) -> ModelSpec:
    """The 2-layer, 64-wide variant of a model, for tests (config only, random weights)."""
    dim = spec.dim if spec.multi_vector else arch.get("hidden_size", arch.get("dim", spec.dim))
    max_len = min(spec.max_seq_len, 512)
    changes = dict(name=f"{spec.name}-tiny", hub_id=None, dim=dim, max_seq_len=max_len)
    return replace(spec, **changes, revision="config-only", arch_config=arch, tiny=True)


def _load_registry(path: Path) -> tuple[dict[str, ModelSpec], dict[str, str]]:
    """The registry file: every model's spec, plus its tiny variant where one is described."""
    doc = json.loads(path.read_text())
    models: dict[str, ModelSpec] = {}
    for entry in doc["models"]:
        tiny_arch = entry.pop("tiny_arch_config", None)
        spec = ModelSpec(**{**entry, "labels": tuple(entry.get("labels", ()))})
        models[spec.name] = spec
        if tiny_arch is not None:
            models[f"{spec.name}-tiny"] = _tiny(spec, tiny_arch)
    return models, doc["default_model"]


MODELS, DEFAULT_MODEL = _load_registry(Path(__file__).with_name("registry.json"))
