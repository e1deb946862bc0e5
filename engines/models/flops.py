"""Useful forward FLOPs per input (2 FLOPs per multiply-accumulate), from a model's architecture.

These give the roofline floor every report shows next to the measured cost. They read only the
architecture config, so `ModelSpec.flops_per_input` delegates here.
"""

from __future__ import annotations

from typing import Any

from core.errors import EngineError


def encoder_flops(
    family: str, arch: dict[str, Any], tokens: float, tokens_sq: float | None = None
) -> float:
    """FLOPs of a text encoder on one input of `tokens` tokens.

    Dense matmuls cost 2 * params * tokens; attention scores and the weighted sum cost
    4 * layers * hidden * tokens * attended_tokens. `tokens_sq` is E[T^2] when averaging.
    """
    c = arch
    if family == "distilbert":
        h, inter, layers = c.get("dim", 768), c.get("hidden_dim", 3072), c.get("n_layers", 6)
        mlp = 2 * h * inter
    elif family == "bert":
        h = c.get("hidden_size", 768)
        inter, layers = c.get("intermediate_size", 3072), c.get("num_hidden_layers", 12)
        mlp = 2 * h * inter
    elif family == "modernbert":
        h = c.get("hidden_size", 768)
        inter, layers = c.get("intermediate_size", 1152), c.get("num_hidden_layers", 22)
        mlp = 3 * h * inter  # gated GLU: Wi is h x 2*inter, Wo is inter x h
    else:  # any other encoder read from its folder's config.json: BERT's formula
        h = c.get("hidden_size", c.get("dim", c.get("d_model")))
        layers = c.get("num_hidden_layers", c.get("n_layers", c.get("num_layers")))
        if not h or not layers:
            raise EngineError(
                f"no FLOP model for family {family!r}: its config names no hidden size or layers"
            )
        inter = c.get("intermediate_size", c.get("hidden_dim", c.get("ffn_dim", 4 * h)))
        mlp = 2 * h * inter
    tsq = tokens * tokens if tokens_sq is None else tokens_sq
    dense = 2 * layers * (4 * h * h + mlp) * tokens
    if family == "modernbert":
        every = c.get("global_attn_every_n_layers", 3)
        window = c.get("local_attention", 128)
        n_global = (layers + every - 1) // every
        # local layers attend to at most `window` tokens
        local_tsq = min(tsq, tokens * window)
        attn = 4 * h * (n_global * tsq + (layers - n_global) * local_tsq)
    else:
        attn = 4 * h * layers * tsq
    return float(dense + attn)


def colqwen2_flops(
    arch: dict[str, Any],
    dim: int,
    tokens: float,
    tokens_sq: float | None = None,
    visual_tokens: float | None = None,
    visual_tokens_sq: float | None = None,
) -> float:
    """Vision tower on 4 patches per visual token + LM on all tokens + the `dim`-d projection.

    `tokens` counts every LM position (prompt + merged visual tokens). The ViT attends over
    all patches of one image; the LM is causal, so its useful attention is half of T^2.
    """
    v, t = arch["vision"], arch["text"]
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
    proj = 2 * h * dim * tokens
    return float(vision + lm + proj)
