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


# Where a hybrid keeps attention (student.attention_layers): MambaInLlama's evenly spaced layers,
# or the layers whose replacement by an aligned SSM costs most (attention_probe.py); an explicit
# list of teacher layers is the third way.
ATTENTION_PLACEMENTS = ("uniform", "probe")


def uniform_attention(n_slots: int, keep: int) -> list[int]:
    """`keep` of `n_slots` mixer slots, evenly spaced from the first (MambaInLlama's 50/25/12.5%;
    benchmarks/bench_hybrid.py's `attention_layers` picks the same)."""
    if keep <= 0:
        return []
    step = n_slots / keep
    return sorted({int(i * step) for i in range(keep)})


def attention_count(n_slots: int, fraction: float) -> int:
    return round(n_slots * fraction)


def place_attention(
    layout: str,
    mapping: Sequence[int],
    choice: str | Sequence[int],
    fraction: float | None = None,
    scores: dict[int, float] | None = None,
) -> str:
    """`layout` with its mixer blocks turned to `A` where attention stays, the rest `S`.

    `mapping` is the teacher layer of each slot (resolve_layer_map). `choice`: `uniform` keeps
    round(fraction * mixers) evenly spaced slots; `probe` keeps that many slots whose teacher
    layers have the highest `scores` (teacher layer -> held-out KL when only it is replaced; ties
    go to the shallower slot); a list names the teacher layers that keep attention."""
    slots = [i for i, c in enumerate(layout) if c in "SA"]  # block index of each mixer slot
    layers = list(mapping[: len(slots)])
    if isinstance(choice, str):
        if choice not in ATTENTION_PLACEMENTS:
            raise ValueError(f"attention_layers={choice!r}: expected one of {ATTENTION_PLACEMENTS} or a list")
        if fraction is None:
            raise ValueError(f"attention_layers={choice!r} needs attention_fraction")
        keep = attention_count(len(slots), fraction)
        if choice == "uniform":
            kept = set(uniform_attention(len(slots), keep))
        else:
            if scores is None or any(t not in scores for t in layers):
                raise ValueError("attention_layers='probe' needs a probe score for every mapped teacher layer")
            kept = set(sorted(range(len(slots)), key=lambda k: (-scores[layers[k]], k))[:keep])
    else:
        wanted = {int(t) for t in choice}
        missing = sorted(wanted - set(layers))
        if missing:
            raise ValueError(
                f"attention_layers {missing}: not teacher layers of this student's mixers (they map to {layers})"
            )
        kept = {k for k, t in enumerate(layers) if t in wanted}
    out = list(layout)
    for k, block in enumerate(slots):
        out[block] = "A" if k in kept else "S"
    return "".join(out)
