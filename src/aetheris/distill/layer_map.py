"""Which teacher layer feeds which student block.

The k-th mixer block (S or A) and the k-th MoE block of the layout both take teacher layer t(k).
`uniform` spaces t evenly over the teacher's depth; an explicit list names it; `block-influence`
keeps the teacher layers that change the residual stream most (ShortGPT: 1 - cos(x_in, x_out),
averaged over calibration tokens), in depth order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# The named strategies; an explicit list of teacher layer indices is the other way to give a map.
LAYER_MAPS = ("uniform", "block-influence")

def num_slots(layout: str) -> int:
    """How many teacher layers a layout needs: max(#mixer blocks, #MoE blocks)."""
    mixers = sum(c in "SA" for c in layout)
    return max(mixers, layout.count("M"))


def uniform_map(n_teacher: int, n_slots: int) -> list[int]:
    if n_slots == 1:
        return [n_teacher - 1]
    return [round(i * (n_teacher - 1) / (n_slots - 1)) for i in range(n_slots)]


def block_influence(hidden_states: Sequence[torch.Tensor], mask: torch.Tensor | None = None) -> list[float]:
    """ShortGPT's BI per layer from `output_hidden_states` (L + 1 tensors of (b, t, d))."""
    scores = []
    for x_in, x_out in zip(hidden_states[:-1], hidden_states[1:]):
        cos = torch.nn.functional.cosine_similarity(x_in.float(), x_out.float(), dim=-1)  # (b, t)
        w = torch.ones_like(cos) if mask is None else mask.float()
        scores.append(float(((1 - cos) * w).sum() / w.sum()))
    return scores


def resolve_layer_map(
    strategy: str | Sequence[int],
    n_teacher: int,
    layout: str,
    influence: Sequence[float] | None = None,
) -> list[int]:
    """The teacher layer of each slot, validated."""
    n = num_slots(layout)
    if isinstance(strategy, str):
        if strategy == "uniform":
            return uniform_map(n_teacher, n)
        if strategy == "block-influence":
            if influence is None:
                raise ValueError(
                    "layer_map='block-influence' needs calibration text (block influence scores)"
                )
            if n > n_teacher:
                raise ValueError(f"block-influence keeps {n} distinct layers but the teacher has {n_teacher}")
            top = sorted(range(n_teacher), key=lambda i: -influence[i])[:n]
            return sorted(top)
        raise ValueError(f"layer_map={strategy!r}: expected one of {LAYER_MAPS} or a list of layer indices")
    layers = [int(i) for i in strategy]
    if len(layers) != n:
        raise ValueError(f"layer_map has {len(layers)} entries: the layout {layout!r} needs {n}")
    bad = [i for i in layers if not 0 <= i < n_teacher]
    if bad:
        raise ValueError(f"layer_map entries {bad} are outside the teacher's layers 0..{n_teacher - 1}")
    return layers
