"""Shared by the pruning methods: settings, the prunable layers, and the block-by-block loop.

Calibration statistics are gathered one decoder block at a time, with every earlier block already
pruned (as SparseGPT and Wanda do), so each block is fitted to the inputs it will really see. The
forward stops after the block being measured: a block costs a partial forward over the calibration
rows, never the vocabulary head.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import Field, field_validator
from torch import nn

from aetheris.compress.calibration import CalibrationSettings, calibration_batch
from aetheris.compress.masks import parse_nm, prune_mask
from aetheris.compress.registry import MethodSettings, Outcome

log = logging.getLogger(__name__)
# Routers pick experts: a few hundred weights whose pruning would reroute tokens, not save bytes.
SKIPPED_SUFFIXES = (".router", ".gate")
CAPTURE_BATCH = 8  # calibration rows per forward


class SparsitySettings(MethodSettings):
    sparsity: float = Field(0.5, gt=0, lt=1)  # unstructured only; N:M implies 1 - N/M
    structure: str = "unstructured"  # or "N:M", e.g. "2:4"

    @field_validator("structure")
    @classmethod
    def _structure(cls, value: str) -> str:
        parse_nm(value)
        return value


class CalibratedSparsitySettings(SparsitySettings, CalibrationSettings):
    pass


@dataclass
class LinearStats:
    """Inputs a linear layer saw: Σ x_j² per input column and, when asked, H = XᵀX / n."""

    sq_norm: torch.Tensor
    hessian: torch.Tensor | None
    tokens: int = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        self.sq_norm += (x * x).sum(0)
        if self.hessian is not None:
            n = self.tokens + x.shape[0]
            self.hessian.mul_(self.tokens / n).addmm_(x.T, x, alpha=1.0 / n)
        self.tokens += x.shape[0]


def prune_by_score(weight: torch.Tensor, score: torch.Tensor, settings: SparsitySettings,
                   per_row: bool) -> torch.Tensor:  # fmt: skip
    """`weight` with the lowest-scored entries zeroed (the score-only methods: no weight update)."""
    mask = prune_mask(score, settings.sparsity, parse_nm(settings.structure), per_row=per_row)
    return weight.masked_fill(mask, 0)


PruneFn = Callable[[torch.Tensor, LinearStats | None, SparsitySettings], torch.Tensor]


def block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(dotted name, ModuleList) of the residual blocks: an Aetheris student's `model.layers`, or the
    decoder layers `teacher_layers` finds in any supported HF family (`gpt_neox.layers`, ...)."""
    if getattr(model.config, "model_type", "") == "aetheris":
        return "model.layers", model.model.layers
    from aetheris.teacher.introspect import teacher_layers

    name = teacher_layers(model)[0].name.rsplit(".", 1)[0]
    return name, model.get_submodule(name)


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    return block_list(model)[1]


def prunable_linears(block: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in block.named_modules()
            if isinstance(m, nn.Linear) and not ("." + name).endswith(SKIPPED_SUFFIXES)}  # fmt: skip


class _Stop(Exception):
    pass


@torch.no_grad()
def capture(model: nn.Module, block: nn.Module, linears: dict[str, nn.Linear], input_ids: torch.Tensor,
            hessian: bool) -> dict[str, LinearStats]:  # fmt: skip
    """Run the calibration rows up to (and through) `block`, accumulating each linear's inputs."""
    stats = {}
    hooks = []
    for name, lin in linears.items():
        cols = lin.in_features
        stats[name] = LinearStats(torch.zeros(cols), torch.zeros(cols, cols) if hessian else None)
        hooks.append(lin.register_forward_pre_hook(lambda m, args, s=stats[name]: s.add(args[0])))

    def stop(module, args, output):
        raise _Stop

    hooks.append(block.register_forward_hook(stop))
    device = next(model.parameters()).device
    try:
        for start in range(0, input_ids.shape[0], CAPTURE_BATCH):
            try:
                model(input_ids=input_ids[start : start + CAPTURE_BATCH].to(device), use_cache=False)
            except _Stop:
                pass
    finally:
        for h in hooks:
            h.remove()
    return stats


@torch.no_grad()
def prune_model(model: nn.Module, tokenizer, settings: SparsitySettings, prune_fn: PruneFn,
                needs: str) -> Outcome:  # fmt: skip
    """Prune every prunable linear of every block with `prune_fn`; `needs` is none, norms or hessian."""
    calibration = None
    input_ids = None
    if needs != "none":
        input_ids, calibration = calibration_batch(tokenizer, settings)
    total = zeros = uncalibrated = 0
    for block in decoder_blocks(model):
        linears = prunable_linears(block)
        stats = capture(model, block, linears, input_ids, needs == "hessian") if input_ids is not None else {}
        for name, lin in linears.items():
            s = stats.get(name)
            if s is not None and s.tokens == 0:  # an expert no calibration token was routed to
                uncalibrated += 1
                s = None
            w = prune_fn(lin.weight.detach().float(), s, settings)
            lin.weight.copy_(w.to(lin.weight.dtype))
            total += w.numel()
            zeros += int((lin.weight == 0).sum())
    if uncalibrated:
        log.warning("%d linear layers saw no calibration token; pruned by magnitude", uncalibrated)
    details = {"pruned_layers_weights": total, "pruned_layers_sparsity": zeros / max(total, 1),
               "layers_without_calibration": uncalibrated}  # fmt: skip
    return Outcome(model, tokenizer, details, calibration)
