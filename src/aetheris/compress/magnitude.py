"""Magnitude pruning: drop the smallest |W| of each layer (unstructured) or of every M inputs (N:M).

The floor the calibrated methods must beat; it needs no calibration text.
"""

from __future__ import annotations

import torch

from aetheris.compress.prune import LinearStats, SparsitySettings, prune_by_score, prune_model
from aetheris.compress.registry import CompressionMethod, Outcome


def magnitude_prune(
    weight: torch.Tensor, stats: LinearStats | None, settings: SparsitySettings
) -> torch.Tensor:
    return prune_by_score(weight, weight.abs(), settings, per_row=False)


class Magnitude(CompressionMethod):
    name = "magnitude"
    Settings = SparsitySettings
    summary = "zero the smallest weights per layer (unstructured p% or N:M)"

    def apply(self, model, tokenizer, settings: SparsitySettings) -> Outcome:
        return prune_model(model, tokenizer, settings, magnitude_prune, needs="none")
