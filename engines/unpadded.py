"""BERT and DistilBERT on packed tokens: no FLOP is spent on padding.

The padded batch is packed into one [tokens, hidden] matrix, so every linear layer (nearly all
of the FLOPs) runs on real tokens only. Attention runs per input with SDPA and no mask; inputs
of equal length share one SDPA call. The result is scattered back into the padded layout the
pipeline pools from, zeros at padded positions. It reuses the Hugging Face model's own modules,
so its outputs equal the padded eager model's at every real token within fp32 tolerance.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from core.errors import EngineError

FAMILIES = ("bert", "distilbert")


class PackedEncoder:
    """The unpadded forward of one loaded BERT / DistilBERT model (its weights, no copy)."""

    def __init__(self, model: Any, family: str, task: str):
        if family not in FAMILIES:
            raise EngineError(
                f"packed tokens run {', '.join(FAMILIES)} models; {family} runs padded"
            )
        self.model = model
        self.family = family
        self.task = task
        self.base = model.base_model
        cfg = model.config
        self.heads = cfg.n_heads if family == "distilbert" else cfg.num_attention_heads
        layers = self.base.transformer.layer if family == "distilbert" else self.base.encoder.layer
        self.layers = list(layers)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """last_hidden_state [B, T, H] (classification: logits [B, labels]) for right-padded
        inputs, like the padded model's output."""
        keep = attention_mask.bool()
        b, t = input_ids.shape
        positions = torch.arange(t, device=input_ids.device).expand(b, t)[keep]
        x = self._embed(input_ids[keep], positions)
        groups = _length_groups(keep)
        for layer in self.layers:
            x = self._layer(layer, x, groups)
        hidden = x.new_zeros(b, t, x.shape[-1])
        hidden[keep] = x
        if self.task == "classification":
            return self._classify(hidden)
        return hidden

    def _embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        emb = self.base.embeddings
        x = emb.word_embeddings(ids) + emb.position_embeddings(positions)
        if self.family == "bert":
            # the padded model adds token type 0 when none is given
            x = x + emb.token_type_embeddings.weight[0]
        return emb.LayerNorm(x)

    def _attention(self, q, k, v, groups) -> torch.Tensor:
        n, hidden = q.shape
        heads = self.heads
        out = torch.empty_like(q)
        for index in groups:  # [inputs, length] packed-token positions of equal-length inputs
            k_in, length = index.shape

            def split(z, index=index, k_in=k_in, length=length):
                return z[index].view(k_in, length, heads, hidden // heads).transpose(1, 2)

            ctx = F.scaled_dot_product_attention(split(q), split(k), split(v))
            out[index] = ctx.transpose(1, 2).reshape(k_in, length, hidden)
        return out

    def _layer(self, layer: Any, x: torch.Tensor, groups) -> torch.Tensor:
        if self.family == "distilbert":
            att = layer.attention
            ctx = self._attention(att.q_lin(x), att.k_lin(x), att.v_lin(x), groups)
            x = layer.sa_layer_norm(att.out_lin(ctx) + x)
            return layer.output_layer_norm(
                layer.ffn.lin2(layer.ffn.activation(layer.ffn.lin1(x))) + x
            )
        sa = layer.attention.self
        ctx = self._attention(sa.query(x), sa.key(x), sa.value(x), groups)
        out = layer.attention.output
        x = out.LayerNorm(out.dense(ctx) + x)
        inner = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x))
        return layer.output.LayerNorm(layer.output.dense(inner) + x)

    def _classify(self, hidden: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.family == "distilbert":
            return m.classifier(torch.relu(m.pre_classifier(hidden[:, 0])))
        return m.classifier(self.base.pooler(hidden))


def _length_groups(keep: torch.Tensor) -> list[torch.Tensor]:
    """Packed-token positions per group of equal-length inputs: one [inputs, length] each."""
    lengths = keep.sum(dim=1)
    if bool((keep.long().diff(dim=1) > 0).any()):
        raise EngineError("packed tokens need right-padded inputs (a real token after padding)")
    starts = torch.cumsum(lengths, 0) - lengths
    groups = []
    for length in torch.unique(lengths).tolist():
        if length == 0:
            continue
        first = starts[lengths == length]
        groups.append(first[:, None] + torch.arange(length, device=keep.device))
    return groups
