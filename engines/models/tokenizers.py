"""Tokenizers and processors: the model's own where available, else a deterministic local one.

Text models get their tokenizer from a local directory, the local Hugging Face cache or the Hub
(only when reachable), else a WordPiece / BPE tokenizer trained here on a fixed corpus.
ColQwen2 gets a processor: that tokenizer plus Qwen2-VL's image processor on its PIL backend,
sized by a `PixelBudget`.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from core.errors import ConfigError, EngineError, MissingDependency
from engines.models.auto import get_spec
from engines.models.loading import colpali_module, hub_reachable
from engines.models.specs import (
    VISION_SPECIAL_TOKENS,
    VISION_TOKEN_IDS,
    ModelSpec,
    transformers_module,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- image processor

# Qwen2-VL's image processor constants (preprocessor_config.json of Qwen2-VL-2B / colqwen2)
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
# colpali's ColQwen2Processor caps an image at 768 visual tokens: max_pixels = 768 * 28 * 28
DEFAULT_MIN_PIXELS = 4 * 28 * 28
DEFAULT_MAX_PIXELS = 768 * 28 * 28


def pil():
    """The PIL module, or a MissingDependency naming the `vision` extra."""
    try:
        import PIL.Image
    except ImportError as e:
        raise MissingDependency("pillow", "vision") from e
    return PIL.Image


def smart_resize(
    height: int, width: int, min_pixels: int, max_pixels: int, factor: int = 28
) -> tuple[int, int]:
    """Qwen2-VL's resize rule: both sides multiples of `factor`, pixels in [min, max]."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


@dataclass(frozen=True)
class PixelBudget:
    """How images are resized before the vision tower (recorded in every result)."""

    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        unit = (PATCH_SIZE * MERGE_SIZE) ** 2
        if self.min_pixels < unit:
            raise ConfigError(f"--min-pixels must be >= {unit}; got {self.min_pixels}")
        if self.max_pixels < self.min_pixels:
            raise ConfigError(
                f"--max-pixels must be >= --min-pixels ({self.min_pixels}); got {self.max_pixels}"
            )

    def visual_tokens(self, width: int, height: int) -> int:
        """Merged visual tokens (= image-token placeholders) for an image of this size."""
        h, w = smart_resize(height, width, self.min_pixels, self.max_pixels)
        return (h // PATCH_SIZE) * (w // PATCH_SIZE) // (MERGE_SIZE**2)


def image_processor(budget: PixelBudget):
    """Qwen2-VL's image processor on the PIL backend, from its known config values."""
    pil()
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    return Qwen2VLImageProcessorPil(
        min_pixels=budget.min_pixels,
        max_pixels=budget.max_pixels,
        patch_size=PATCH_SIZE,
        merge_size=MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
    )


# --------------------------------------------------------------------------- tokenizers


@dataclass
class LoadedTokenizer:
    tokenizer: Any
    source: str  # hub id / directory / "fallback-wordpiece" / "fallback-bpe"

    @property
    def is_fallback(self) -> bool:
        return self.source.startswith("fallback")


def load_tokenizer(
    spec: ModelSpec, model_path: str | None = None, trust_remote_code: bool = False
) -> LoadedTokenizer:
    """The model's own tokenizer where available, else a deterministic local fallback."""
    return copy.deepcopy(_load_tokenizer_cached(spec.ref, model_path, trust_remote_code))


@functools.lru_cache(maxsize=16)
def _load_tokenizer_cached(
    ref: str, model_path: str | None, trust_remote_code: bool
) -> LoadedTokenizer:
    spec = get_spec(ref)
    if spec.task == "vision-embedding":
        return _load_processor(spec, model_path)
    tf = transformers_module()
    folder = model_path or spec.source
    if folder:
        # remote code only when asked for: transformers refuses a folder that needs it otherwise
        kw = {"trust_remote_code": True} if trust_remote_code else {}
        try:
            tok = tf.AutoTokenizer.from_pretrained(folder, **kw)
        except (OSError, ValueError) as e:
            raise EngineError(
                f"could not load the tokenizer of {folder}: {str(e).splitlines()[0]}"
            ) from e
        return LoadedTokenizer(tok, folder)
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
        log.warning("Hub unreachable: using a locally trained fallback tokenizer for %s", spec.name)
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


def _wordpiece_vocab(pre_tokenizer, specials: list[str], size: int) -> dict[str, int]:
    """Specials, every character (alone and as a ## continuation), then the corpus's words by
    frequency (ties alphabetical): a deterministic WordPiece vocabulary of at most `size`."""
    counts: Counter[str] = Counter(
        w for line in _corpus() for w, _ in pre_tokenizer.pre_tokenize_str(line)
    )
    chars = sorted({c for w in counts for c in w})
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    tokens = [*specials, *chars, *(f"##{c}" for c in chars), *words][:size]
    return {t: i for i, t in enumerate(tokens)}


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

    tf = transformers_module()
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
        tok.train_from_iterator(_corpus(), trainer=trainer)
        kind = "fallback-bpe"
    else:
        # the WordPiece trainer breaks frequency ties in hash order, which differs per process;
        # the vocabulary is built here instead, in a fixed order, so every process agrees
        pre = pre_tokenizers.BertPreTokenizer()
        vocab = _wordpiece_vocab(pre, specials, vocab_size)
        tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=False)
        tok.pre_tokenizer = pre
        tok.decoder = decoders.WordPiece()
        kind = "fallback-wordpiece"
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
    tf = transformers_module()
    if spec.arch_config.get("backend") == "colpali":
        cm = colpali_module()
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

    tf = transformers_module()
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
