"""Model registry: one `ModelSpec` per supported model, and the code that builds it.

A model is built, in order of preference, from an explicit local directory, the local Hugging
Face cache, the Hub (only when it is reachable), or its architecture config alone with random
weights. Whatever was used is recorded (`weights=pretrained|local|random`) and travels into
every result row. Tokenizers follow the same order and fall back to one trained locally.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import random
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from engines.errors import ConfigError, EngineError, MissingDependency

log = logging.getLogger(__name__)

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
        tf = _transformers()
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
                f"model {self.name!r} ({self.family}) has no text config builder; "
                "the vision pipeline is not implemented yet (issue #7)"
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
        """Useful forward FLOPs for one input of `tokens` tokens (2 FLOPs per MAC).

        Dense matmuls cost 2 * params * tokens; attention scores and the weighted sum cost
        4 * layers * hidden * tokens * attended_tokens. `tokens_sq` is E[T^2] when averaging.
        Vision models also take `visual_tokens` and `visual_tokens_sq` (see `_colqwen2_flops`).
        """
        c = self.arch_config
        if self.family == "colqwen2":
            return self._colqwen2_flops(tokens, tokens_sq, **vision)
        if self.family == "distilbert":
            h, inter, layers = c.get("dim", 768), c.get("hidden_dim", 3072), c.get("n_layers", 6)
            mlp = 2 * h * inter
        elif self.family == "bert":
            h = c.get("hidden_size", 768)
            inter, layers = c.get("intermediate_size", 3072), c.get("num_hidden_layers", 12)
            mlp = 2 * h * inter
        elif self.family == "modernbert":
            h = c.get("hidden_size", 768)
            inter, layers = c.get("intermediate_size", 1152), c.get("num_hidden_layers", 22)
            mlp = 3 * h * inter  # gated GLU: Wi is h x 2*inter, Wo is inter x h
        else:
            raise EngineError(f"no FLOP model for family {self.family!r}")
        tsq = tokens * tokens if tokens_sq is None else tokens_sq
        dense = 2 * layers * (4 * h * h + mlp) * tokens
        if self.family == "modernbert":
            every = c.get("global_attn_every_n_layers", 3)
            window = c.get("local_attention", 128)
            n_global = (layers + every - 1) // every
            # local layers attend to at most `window` tokens
            local_tsq = min(tsq, tokens * window)
            attn = 4 * h * (n_global * tsq + (layers - n_global) * local_tsq)
        else:
            attn = 4 * h * layers * tsq
        return float(dense + attn)

    def _colqwen2_flops(
        self,
        tokens: float,
        tokens_sq: float | None = None,
        visual_tokens: float | None = None,
        visual_tokens_sq: float | None = None,
    ) -> float:
        """Vision tower on 4 patches per visual token + LM on all tokens + the 128-d projection.

        `tokens` counts every LM position (prompt + merged visual tokens). The ViT attends over
        all patches of one image; the LM is causal, so its useful attention is half of T^2.
        """
        v, t = self.arch_config["vision"], self.arch_config["text"]
        merge = v.get("spatial_merge_size", 2) ** 2
        vt = float(tokens if visual_tokens is None else visual_tokens)
        vt_sq = vt * vt if visual_tokens_sq is None else float(visual_tokens_sq)
        patches, patches_sq = merge * vt, merge * merge * vt_sq
        d, depth = v["embed_dim"], v["depth"]
        patch_in = v.get("in_channels", 3) * v.get("temporal_patch_size", 2) * v["patch_size"] ** 2
        mlp = 2 * d * d * v.get("mlp_ratio", 4)
        vision = 2 * patch_in * d * patches  # patch embedding
        vision += 2 * depth * (4 * d * d + mlp) * patches + 4 * depth * d * patches_sq
        merger = d * merge
        vision += 2 * (merger * merger + merger * t["hidden_size"]) * vt
        h, layers, inter = t["hidden_size"], t["num_hidden_layers"], t["intermediate_size"]
        kv = h // t["num_attention_heads"] * t.get("num_key_value_heads", t["num_attention_heads"])
        tsq = tokens * tokens if tokens_sq is None else tokens_sq
        lm = 2 * layers * (2 * h * h + 2 * h * kv + 3 * h * inter) * tokens
        lm += 2 * layers * h * tsq  # causal: half of the 4 * h * T^2 a bidirectional encoder pays
        proj = 2 * h * self.dim * tokens
        return float(vision + lm + proj)


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


# --------------------------------------------------------------------------- hub access


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 2.0) -> bool:
    """True when the Hub answers a TCP connect; honours HF_HUB_OFFLINE. Never hangs."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ) not in ("0", "", "false"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        with socket.create_connection((host or "huggingface.co", 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _transformers():
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - base dependency
        raise MissingDependency("transformers", "") from e
    return transformers


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
) -> LoadedModel:
    """Build the torch model for a spec, falling back as the module docstring says."""
    if weights not in WEIGHTS:
        raise ConfigError(f"--weights must be one of {WEIGHTS}, got {weights!r}")
    if spec.arch_config.get("backend") == "colpali":
        return _load_colpali(spec, weights=weights, model_path=model_path, attn=attn)
    tf = _transformers()
    if spec.task == "vision-embedding":
        auto = tf.ColQwen2ForRetrieval
    elif spec.task == "classification":
        auto = tf.AutoModelForSequenceClassification
    else:
        auto = tf.AutoModel
    kw = dict(attn_implementation=attn)
    if weights != "random":
        if model_path:
            if not os.path.isdir(model_path):
                raise ConfigError(f"--model-path {model_path!r} is not a directory")
            return LoadedModel(auto.from_pretrained(model_path, **kw), "local", model_path)
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


def _with_attn(config, attn: str):
    # ColQwen2ForRetrieval has no auto class for from_config; set the attention on the config
    config._attn_implementation = attn
    config.vlm_config._attn_implementation = attn
    return config


def _colpali():
    try:
        import colpali_engine.models as cm
    except ImportError as e:
        raise MissingDependency("colpali-engine", "colpali") from e
    return cm


def _load_colpali(spec: ModelSpec, *, weights: str, model_path: str | None, attn: str):
    """colpali-engine's ColQwen2 (optional extra); pretrained or local weights only."""
    if weights == "random":
        raise EngineError(
            f"{spec.name} loads colpali-engine checkpoints only; for config-only random "
            "weights use --model colqwen2 (transformers-native)"
        )
    cm = _colpali()
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


# --------------------------------------------------------------------------- tokenizers


@dataclass
class LoadedTokenizer:
    tokenizer: Any
    source: str  # hub id / directory / "fallback-wordpiece" / "fallback-bpe"

    @property
    def is_fallback(self) -> bool:
        return self.source.startswith("fallback")


def load_tokenizer(spec: ModelSpec, model_path: str | None = None) -> LoadedTokenizer:
    """The model's own tokenizer where available, else a deterministic local fallback."""
    return copy.deepcopy(_load_tokenizer_cached(spec.name, model_path))


@functools.lru_cache(maxsize=16)
def _load_tokenizer_cached(name: str, model_path: str | None) -> LoadedTokenizer:
    spec = get_spec(name)
    if spec.task == "vision-embedding":
        return _load_processor(spec, model_path)
    tf = _transformers()
    if model_path:
        return LoadedTokenizer(tf.AutoTokenizer.from_pretrained(model_path), model_path)
    if spec.hub_id:
        try:
            tok = tf.AutoTokenizer.from_pretrained(
                spec.hub_id, revision=spec.revision, local_files_only=True
            )
            return LoadedTokenizer(tok, spec.hub_id)
        except (OSError, ValueError):
            pass
        if hub_reachable():
            tok = tf.AutoTokenizer.from_pretrained(spec.hub_id, revision=spec.revision)
            return LoadedTokenizer(tok, spec.hub_id)
        log.warning("Hub unreachable: using a locally trained fallback tokenizer for %s", name)
    return _fallback_tokenizer(spec)


# A small multilingual vocabulary for the fallback tokenizer's corpus and the synthetic workload.
WORDS = (
    "the of and to in is was for on that with as by at from his her it an were are which this "
    "be or has had not but one their have its new after who they two been first more also other "
    "time year people service product order delivery price quality support team customer great "
    "good bad terrible excellent average slow fast happy angry review recommend never always "
    "would could should again store online package arrived broken perfect value money refund "
    "el la los las de que y en un una por con para es muy bueno malo producto servicio "
    "der die das und ist nicht mit sehr gut schlecht wir ich sie es auf für "
    "le les des et est une pas très bien mauvais avec pour nous vous "
    "il lo che di e non molto buono cattivo con per sono "
    "o os as um uma não muito bom ruim com para "
    "question answer history science country river city music film book game war king "
    "university government company system water world life language system network model "
    "data search result energy health market school family village station island mountain"
).split()


def _corpus(n_lines: int = 2000, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        k = rng.randint(5, 40)
        words = [rng.choice(WORDS) for _ in range(k)]
        if rng.random() < 0.3:
            words.append(str(rng.randint(0, 9999)))
        lines.append(" ".join(words) + rng.choice([".", "!", "?", ""]))
    return lines


def _fallback_tokenizer(spec: ModelSpec) -> LoadedTokenizer:
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tf = _transformers()
    vocab_size = min(8000, int(spec.arch_config.get("vocab_size", 8000)))
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    if spec.family == "modernbert":
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        kind = "fallback-bpe"
    else:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=specials, show_progress=False
        )
        kind = "fallback-wordpiece"
    tok.train_from_iterator(_corpus(), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = tf.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=spec.max_seq_len,
    )
    return LoadedTokenizer(fast, kind)


# --------------------------------------------------------------------------- vision processors


def _load_processor(spec: ModelSpec, model_path: str | None) -> LoadedTokenizer:
    """ColQwen2's processor (tokenizer + PIL image processor); `.tokenizer` holds the processor.

    Hub or local: the tokenizer and preprocessor config from there, the image processor on
    its PIL backend (no torchvision). Offline: a fallback BPE tokenizer with Qwen2-VL's
    special tokens and the image processor from Qwen2-VL's known config values.
    """
    from engines.vision import PixelBudget, image_processor

    tf = _transformers()
    if spec.arch_config.get("backend") == "colpali":
        cm = _colpali()
        src = model_path or spec.hub_id
        local = bool(model_path) or not hub_reachable()
        try:
            proc = cm.ColQwen2Processor.from_pretrained(src, local_files_only=local)
        except (OSError, ValueError) as e:
            raise EngineError(
                f"could not load the colpali-engine processor of {src}: {str(e).splitlines()[0]}"
            ) from e
        return LoadedTokenizer(proc, src)
    src = model_path or spec.hub_id
    if src:
        local = bool(model_path) or not hub_reachable()
        try:
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
                Qwen2VLImageProcessorPil,
            )

            tok = tf.AutoTokenizer.from_pretrained(src, local_files_only=local)
            ip = Qwen2VLImageProcessorPil.from_pretrained(src, local_files_only=local)
            return LoadedTokenizer(tf.ColQwen2Processor(image_processor=ip, tokenizer=tok), src)
        except (OSError, ValueError) as e:
            if model_path:
                raise EngineError(
                    f"could not load a processor from {model_path}: {str(e).splitlines()[0]}"
                ) from e
        log.warning(
            "Hub unreachable and %s not cached: using a fallback tokenizer and Qwen2-VL's "
            "image processor defaults for %s",
            src,
            spec.name,
        )
    tok = _fallback_vision_tokenizer(spec)
    proc = tf.ColQwen2Processor(image_processor=image_processor(PixelBudget()), tokenizer=tok)
    return LoadedTokenizer(proc, "fallback-bpe")


def _fallback_vision_tokenizer(spec: ModelSpec):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tf = _transformers()
    vocab = min(8000, int(spec.arch_config["text"]["vocab_size"]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=list(VISION_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus() + ["Describe the image.", "user", "Query: "], trainer=trainer)
    for t in VISION_SPECIAL_TOKENS:
        assert tok.token_to_id(t) == VISION_TOKEN_IDS[t], t
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=list(VISION_SPECIAL_TOKENS[1:]),
        model_max_length=32768,
    )
