"""Wanda (Sun et al. 2023): score |W_ij| · ‖X_j‖₂ and drop the lowest within each output row.

No weight update: the score alone decides, from one pass of calibration activations.
"""

from __future__ import annotations

import torch

from aetheris.compress.prune import (
    CalibratedSparsitySettings,
    LinearStats,
    SparsitySettings,
    prune_by_score,
    prune_model,
)
from aetheris.compress.registry import CompressionMethod, Outcome


def wanda_score(weight: torch.Tensor, stats: LinearStats | None) -> torch.Tensor:
    if stats is None:  # no activations (an unrouted expert): magnitude alone
        return weight.abs()
    return weight.abs() * stats.sq_norm.sqrt().unsqueeze(0)


def wanda_prune(weight: torch.Tensor, stats: LinearStats | None, settings: SparsitySettings) -> torch.Tensor:
    return prune_by_score(weight, wanda_score(weight, stats), settings, per_row=True)


class Wanda(CompressionMethod):
    name = "wanda"
    Settings = CalibratedSparsitySettings
    summary = "weights x activation norms, lowest per output row (unstructured or N:M)"

    def apply(self, model, tokenizer, settings: CalibratedSparsitySettings) -> Outcome:
        return prune_model(model, tokenizer, settings, wanda_prune, needs="norms")
