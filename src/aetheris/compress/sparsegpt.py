"""SparseGPT (Frantar & Alistarh 2023): prune with OBS updates from the calibration Hessian.

Columns are visited left to right. A pruned weight's error is spread over the columns still to
come through the inverse Hessian's Cholesky factor, so the kept weights change to compensate;
masks are chosen per block of 128 columns (per M columns under N:M) from w² / [H⁻¹]_jj².
`sparsegpt_blocked` defers the updates to later blocks (the fast path); `sparsegpt_reference`
applies each column's update to every later column at once. Tests check that they agree.
"""

from __future__ import annotations

import torch
from pydantic import Field

from aetheris.compress.masks import parse_nm
from aetheris.compress.prune import CalibratedSparsitySettings, LinearStats, prune_model
from aetheris.compress.registry import CompressionMethod, Outcome


class SparseGPTSettings(CalibratedSparsitySettings):
    block_size: int = Field(128, ge=1)
    dampening: float = Field(0.01, ge=0)  # fraction of mean(diag H) added to the diagonal


def inverse_hessian_factor(weight: torch.Tensor, hessian: torch.Tensor | None,
                           dampening: float) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Upper Cholesky factor of H⁻¹ (dampened), and W with the columns no input reached zeroed."""
    w = weight.clone()
    h = torch.eye(w.shape[1], dtype=w.dtype) if hessian is None else hessian.to(w.dtype).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h.diagonal().add_(dampening * torch.mean(torch.diag(h)))
    h_inv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return w, torch.linalg.cholesky(h_inv, upper=True)


def _block_mask(w: torch.Tensor, d: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Unstructured mask of one column block: the round(sparsity · size) lowest w² / d²."""
    score = (w * w / (d * d).unsqueeze(0)).reshape(-1)
    mask = torch.zeros_like(score, dtype=torch.bool)
    k = round(sparsity * score.numel())
    if k:
        mask[torch.topk(score, k, largest=False).indices] = True
    return mask.reshape(w.shape)


def _nm_mask(mask: torch.Tensor, w: torch.Tensor, d: torch.Tensor, i: int, nm: tuple[int, int]) -> None:
    """At the first column of each M-group, mark its M - N lowest-scored weights per row."""
    n, m = nm
    score = w[:, i : i + m] ** 2 / (d[i : i + m] ** 2).unsqueeze(0)
    mask.scatter_(1, i + torch.topk(score, m - n, dim=1, largest=False).indices, True)


def sparsegpt_blocked(weight: torch.Tensor, hessian: torch.Tensor | None, sparsity: float,
                      nm: tuple[int, int] | None, block_size: int = 128,
                      dampening: float = 0.01) -> torch.Tensor:  # fmt: skip
    w, u = inverse_hessian_factor(weight, hessian, dampening)
    cols = w.shape[1]
    for b0 in range(0, cols, block_size):
        b1 = min(b0 + block_size, cols)
        w1, u1 = w[:, b0:b1].clone(), u[b0:b1, b0:b1]
        d = torch.diag(u1)
        mask = _block_mask(w1, d, sparsity) if nm is None else torch.zeros_like(w1, dtype=torch.bool)
        err = torch.zeros_like(w1)
        for i in range(b1 - b0):
            if nm is not None and i % nm[1] == 0:
                _nm_mask(mask, w1, d, i, nm)
            q = w1[:, i].masked_fill(mask[:, i], 0)
            err[:, i] = (w1[:, i] - q) / d[i]
            w1[:, i:] -= err[:, i : i + 1] * u1[i, i:].unsqueeze(0)
            w1[:, i] = q
        w[:, b0:b1] = w1
        w[:, b1:] -= err @ u[b0:b1, b1:]  # the deferred update of every later column
    return w


def sparsegpt_reference(weight: torch.Tensor, hessian: torch.Tensor | None, sparsity: float,
                        nm: tuple[int, int] | None, block_size: int = 128,
                        dampening: float = 0.01) -> torch.Tensor:  # fmt: skip
    """Same result, no deferred updates: every column's error reaches all later columns at once."""
    w, u = inverse_hessian_factor(weight, hessian, dampening)
    d = torch.diag(u)
    mask = torch.zeros_like(w, dtype=torch.bool)
    for i in range(w.shape[1]):
        if nm is None and i % block_size == 0:
            b1 = min(i + block_size, w.shape[1])
            mask[:, i:b1] = _block_mask(w[:, i:b1], d[i:b1], sparsity)
        if nm is not None and i % nm[1] == 0:
            _nm_mask(mask, w, d, i, nm)
        q = w[:, i].masked_fill(mask[:, i], 0)
        err = (w[:, i] - q) / d[i]
        w[:, i:] -= err.unsqueeze(1) * u[i, i:].unsqueeze(0)
        w[:, i] = q
    return w


def sparsegpt_prune(
    weight: torch.Tensor, stats: LinearStats | None, settings: SparseGPTSettings
) -> torch.Tensor:
    hessian = None if stats is None else stats.hessian
    return sparsegpt_blocked(weight, hessian, settings.sparsity, parse_nm(settings.structure),
                             settings.block_size, settings.dampening)  # fmt: skip


class SparseGPT(CompressionMethod):
    name = "sparsegpt"
    Settings = SparseGPTSettings
    summary = "OBS pruning with the calibration Hessian, 128-column blocks (unstructured or N:M)"

    def apply(self, model, tokenizer, settings: SparseGPTSettings) -> Outcome:
        return prune_model(model, tokenizer, settings, sparsegpt_prune, needs="hessian")
