"""Text with exact token counts under a given tokenizer (synthetic workloads, parity inputs)."""

from __future__ import annotations

import numpy as np

from engines.models import WORDS


def texts_with_token_counts(tokenizer, targets, seed: int = 0) -> list[str]:
    """One text per target, built word by word until the tokenizer (with specials) reaches it."""
    rng = np.random.default_rng(seed)
    words = list(WORDS)
    first = np.asarray([len(x) for x in tokenizer(words, add_special_tokens=False)["input_ids"]])
    spaced = [" " + w for w in words]
    later = np.asarray([len(x) for x in tokenizer(spaced, add_special_tokens=False)["input_ids"]])
    specials = len(tokenizer("", add_special_tokens=True)["input_ids"])
    texts = []
    for target in targets:
        picks, total = [], specials
        while total < target:
            w = int(rng.integers(len(words)))
            cost = later[w] if picks else first[w]
            if picks and total + cost > target and cost > 1:
                continue  # prefer a word that lands exactly on the target
            picks.append(words[w])
            total += cost
        texts.append(" ".join(picks))
    return texts
