"""A tensor-in, tensor-out wrapper around a Hugging Face encoder, for tracing and export."""

from __future__ import annotations

from typing import Any

from core import contract

INPUT_NAMES = list(contract.TEXT_MODEL_INPUTS)


def output_name(task: str) -> str:
    return contract.model_output(task)


def wrap(model: Any, task: str):
    """nn.Module(input_ids, attention_mask) -> logits | last_hidden_state, in eval mode.

    Exporters trace in the wrapper's mode and restore it afterwards, so it must itself be in
    eval mode, or the wrapped model is left training (dropout on) after export.
    """
    import torch

    field = output_name(task)

    class Encoder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return getattr(self.inner(input_ids=input_ids, attention_mask=attention_mask), field)

    return Encoder(model).eval()


def example_inputs(batch: int = 2, seq: int = 16):
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, seq // 2 :] = 0  # a padded row, so masking is part of the traced graph
    return ids, mask
