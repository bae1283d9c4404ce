"""Which weights to drop, given a score per weight (higher = keep): unstructured or N:M."""

from __future__ import annotations

import re

import torch


def parse_nm(structure: str) -> tuple[int, int] | None:
    """'unstructured' -> None; 'N:M' (N kept of every M consecutive inputs) -> (N, M)."""
    if structure == "unstructured":
        return None
    match = re.fullmatch(r"(\d+):(\d+)", structure)
    if not match or not 0 < int(match[1]) < int(match[2]):
        raise ValueError(f"expected 'unstructured' or 'N:M' with 0 < N < M (e.g. '2:4'), got {structure!r}")
    return int(match[1]), int(match[2])


def prune_mask(score: torch.Tensor, sparsity: float, nm: tuple[int, int] | None,
               per_row: bool) -> torch.Tensor:  # fmt: skip
    """True where a weight is pruned.

    Unstructured: exactly round(sparsity · n) of the lowest scores, n being each row's length
    (per_row, as Wanda compares) or the whole matrix's. N:M: in every M consecutive inputs of a
    row, the M - N lowest.
    """
    if nm is not None:
        n, m = nm
        rows, cols = score.shape
        if cols % m:
            raise ValueError(f"N:M sparsity needs input width divisible by {m}, got {cols}")
        groups = score.reshape(rows, cols // m, m)
        drop = torch.topk(groups, m - n, dim=-1, largest=False).indices
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, drop, True)
        return mask.reshape(rows, cols)
    flat = score if per_row else score.reshape(1, -1)
    k = round(sparsity * flat.shape[1])
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if k:
        mask.scatter_(1, torch.topk(flat, k, dim=1, largest=False).indices, True)
    return mask.reshape(score.shape)
