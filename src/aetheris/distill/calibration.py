"""Calibration activations from the teacher: MLP inputs and per-layer hidden states."""

from __future__ import annotations

import torch
from torch import nn

from aetheris.distill.layer_map import block_influence
from aetheris.teacher.introspect import teacher_layers


@torch.no_grad()
def mlp_inputs(teacher: nn.Module, input_ids: torch.Tensor, layers: list[int],
               attention_mask: torch.Tensor | None = None) -> dict[int, torch.Tensor]:  # fmt: skip
    """The (normed) input each listed teacher layer's MLP sees, as (real tokens, hidden)."""
    captured: dict[int, torch.Tensor] = {}
    keep = None if attention_mask is None else attention_mask.reshape(-1).bool()
    hooks = []
    modules = teacher_layers(teacher)
    for i in set(layers):

        def hook(module, args, i=i):
            x = args[0].reshape(-1, args[0].shape[-1])
            captured[i] = x if keep is None else x[keep]

        hooks.append(modules[i].mlp.register_forward_pre_hook(hook))
    try:
        # One position's logits: at 262k vocabulary, 16 x 512 tokens of full logits are 8.6 GB nobody reads.
        teacher(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1)
    finally:
        for h in hooks:
            h.remove()
    return captured


@torch.no_grad()
def influence_scores(teacher: nn.Module, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor | None = None) -> list[float]:  # fmt: skip
    """ShortGPT block influence of every teacher layer on this text."""
    out = teacher(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, logits_to_keep=1)
    return block_influence(out.hidden_states, attention_mask)
