"""Magnitude pruning: drop the smallest |W| of each layer (unstructured) or of every M inputs (N:M).

The floor the calibrated methods must beat; it needs no calibration text.
"""

from __future__ import annotations

import torch

from aetheris.compress.masks import parse_nm, prune_mask
from aetheris.compress.prune import LinearStats, SparsitySettings, prune_model
from aetheris.compress.registry import CompressionMethod, Outcome


def magnitude_prune(
    weight: torch.Tensor, stats: LinearStats | None, settings: SparsitySettings
) -> torch.Tensor:
    mask = prune_mask(weight.abs(), settings.sparsity, parse_nm(settings.structure), per_row=False)
    return weight.masked_fill(mask, 0)


class Magnitude(CompressionMethod):
    name = "magnitude"
    Settings = SparsitySettings
    summary = "zero the smallest weights per layer (unstructured p% or N:M)"

    def apply(self, model, tokenizer, settings: SparsitySettings) -> Outcome:
        return prune_model(model, tokenizer, settings, magnitude_prune, needs="none")
