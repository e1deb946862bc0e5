"""Calibration inputs for static int8: tokenized batches of varied texts, made here, no downloads.

Two kinds of text, so the activation ranges are not tuned to one vocabulary: sentences of the
synthetic workloads' words at exact token counts, and strings of random tokenizer vocabulary
pieces (subwords, digits, punctuation) that reach tokens the synthetic words never use. Lengths
are spread from 8 tokens to the sequence cap, and batches are sorted by length so padding inside
a batch stays small, as the harness's batches are.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from engines.pipeline import Pipeline
from engines.textgen import texts_with_token_counts

#: the feed-forward down projection's module path in each encoder family (BERT, DistilBERT,
#: ModernBERT): the MatMul after GELU, whose input ranges one calibrated int8 scale handles
#: worst; both static int8 recipes keep its activations out of calibration
FFN_DOWN_MODULES = ((r"layer\.\d+", "output", "dense"), ("ffn", "lin2"), ("mlp", "Wo"))


def ffn_down_pattern(separator: str) -> re.Pattern:
    """Matches a graph node name holding an FFN down projection's module path, written with
    `separator` between module names ("." in OpenVINO friendly names, "/" in ONNX names)."""
    paths = "|".join(re.escape(separator).join(m) for m in FFN_DOWN_MODULES)
    return re.compile(rf"(^|[./])({paths})[./]")


#: defaults recorded in manifests: texts, texts per batch, seed, longest text in tokens
CALIBRATION = {"texts": 128, "batch": 8, "seed": 1234, "max_tokens": 256}


def vocab_texts(tokenizer: Any, n: int, lo: int, hi: int, seed: int) -> list[str]:
    """`n` strings of lo..hi random (non-special) vocabulary pieces, detokenized."""
    rng = np.random.default_rng(seed)
    specials = set(tokenizer.all_special_tokens)
    vocab = sorted(
        w for w in tokenizer.get_vocab() if w not in specials and w.isascii() and "[" not in w
    )
    return [
        tokenizer.convert_tokens_to_string(list(rng.choice(vocab, int(rng.integers(lo, hi)))))
        for _ in range(n)
    ]


def calibration_texts(
    tokenizer: Any, n: int = CALIBRATION["texts"], seed: int = CALIBRATION["seed"], hi: int = 256
) -> list[str]:
    """Half synthetic-word sentences, half vocabulary-piece strings; lengths 8..`hi` tokens."""
    rng = np.random.default_rng(seed)
    half = n // 2
    counts = [int(x) for x in rng.integers(8, max(hi, 9), n - half)]
    texts = texts_with_token_counts(tokenizer, counts, seed=seed + 1)
    texts += vocab_texts(tokenizer, half, 8, max(hi - 2, 9), seed + 2)
    return texts


def calibration_batches(
    spec: Any, tokenizer: Any, n: int = CALIBRATION["texts"], batch: int = CALIBRATION["batch"]
) -> list[dict[str, np.ndarray]]:
    """The calibration texts tokenized by the shared pipeline, `batch` texts per feed."""
    hi = min(CALIBRATION["max_tokens"], int(spec.max_seq_len))
    pipe = Pipeline(spec, tokenizer, hi)
    texts = calibration_texts(tokenizer, n, hi=hi)
    lengths = [len(ids) for ids in pipe.tokenize(texts)]
    texts = [t for _, t in sorted(zip(lengths, texts, strict=True), key=lambda x: x[0])]
    return [pipe.preprocess(texts[i : i + batch]).inputs for i in range(0, len(texts), batch)]


def calibration_record(n: int = CALIBRATION["texts"], batch: int = CALIBRATION["batch"]) -> dict:
    """What the manifest says about the calibration set."""
    return {
        "texts": n,
        "batch": batch,
        "seed": CALIBRATION["seed"],
        "tokens": f"8..{CALIBRATION['max_tokens']}",
        "source": "half synthetic-word sentences (engines.textgen), half random vocabulary pieces",
    }
