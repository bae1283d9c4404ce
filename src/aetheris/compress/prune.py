"""Shared by the pruning methods: settings, the prunable layers, and the block-by-block loop.

Calibration statistics are gathered one decoder block at a time, with every earlier block already
pruned (as SparseGPT and Wanda do), so each block is fitted to the inputs it will really see. One
forward of the calibration rows, stopped before the last block, records how the model calls each
block (masks, RoPE tables: per block, since they can differ per layer) and block 0's input; then
each block runs on its current inputs to gather statistics, is pruned, and runs again to give the
next block's inputs. A model of L blocks costs about 3L block forwards per calibration batch, never
the vocabulary head. `capture_reference` (a forward from the embeddings per block, O(L²)) is the
plain reference the tests compare against.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
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


def _stats_hooks(linears: dict[str, nn.Linear], hessian: bool) -> tuple[dict[str, LinearStats], list]:
    """Empty stats per linear, and the pre-hooks that fill them with the linear's inputs."""
    stats, hooks = {}, []
    for name, lin in linears.items():
        cols = lin.in_features
        stats[name] = LinearStats(torch.zeros(cols), torch.zeros(cols, cols) if hessian else None)
        hooks.append(lin.register_forward_pre_hook(lambda m, args, s=stats[name]: s.add(args[0])))
    return stats, hooks


@torch.no_grad()
def capture_reference(model: nn.Module, block: nn.Module, linears: dict[str, nn.Linear],
                      input_ids: torch.Tensor, hessian: bool) -> dict[str, LinearStats]:  # fmt: skip
    """The plain reference the sequential path is tested against: run the calibration rows through
    the model up to (and through) `block`, accumulating each linear's inputs. Block i costs i + 1
    block forwards, so a model of L blocks costs O(L²)."""
    stats, hooks = _stats_hooks(linears, hessian)

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


@dataclass(frozen=True)
class Link:
    """A call argument that is the hidden input of block `block` (an Aetheris parallel pair passes
    its S/A block's input to the M block as `branch_input`): it depends on the hidden values, so it
    is replayed with that block's current input, not the unpruned one seen at capture."""

    block: int


@dataclass
class BlockCall:
    """How the model called one block on one calibration batch, without the hidden state."""

    positional: bool  # hidden state as args[0], else as the kwarg `hidden_states`
    args: tuple
    kwargs: dict


# Caches would grow with every replay; use_cache=False is passed already, this makes sure.
CACHE_KWARGS = ("past_key_values", "past_key_value", "cache", "layer_past")


def _hidden_input(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _map_leaves(value, fn):
    """`value` with `fn` applied to every leaf of its nested tuples, lists and dicts."""
    if type(value) in (tuple, list):
        return type(value)(_map_leaves(v, fn) for v in value)
    if type(value) is dict:
        return {k: _map_leaves(v, fn) for k, v in value.items()}
    return fn(value)


def _strip(value, held: dict[int, tuple[int, torch.Tensor]]):
    """`value` with caches dropped and the block inputs in `held` (by id) turned into `Link`s."""
    from transformers.cache_utils import Cache

    def leaf(v):
        if isinstance(v, Cache):
            return None
        hit = held.get(id(v)) if isinstance(v, torch.Tensor) else None
        return Link(hit[0]) if hit is not None and hit[1] is v else v

    return _map_leaves(value, leaf)


def block_call(args: tuple, kwargs: dict, held: dict[int, tuple[int, torch.Tensor]]) -> BlockCall:
    kwargs = {k: None if k in CACHE_KWARGS else v for k, v in kwargs.items() if k != "hidden_states"}
    return BlockCall(len(args) > 0, _strip(tuple(args[1:]), held), _strip(kwargs, held))


@torch.no_grad()
def capture_block_calls(model: nn.Module, input_ids: torch.Tensor
                        ) -> tuple[list[list[BlockCall]], list[torch.Tensor]]:  # fmt: skip
    """One forward of the calibration rows (per CAPTURE_BATCH), stopped before the last block runs:
    each block's call per batch (masks and RoPE tables can differ per layer, e.g. Gemma 3's sliding
    and global ones) and block 0's hidden input per batch."""
    blocks = decoder_blocks(model)
    calls: list[list[BlockCall]] = [[] for _ in blocks]
    first: list[torch.Tensor] = []
    held: dict[int, tuple[int, torch.Tensor]] = {}  # this batch's block inputs, alive so ids stay unique

    def hook(i: int):
        def pre_hook(module, args, kwargs):
            hidden = _hidden_input(args, kwargs)
            held[id(hidden)] = (i, hidden)
            calls[i].append(block_call(args, kwargs, held))
            if i == 0:
                first.append(hidden)
            if i == len(blocks) - 1:  # every call captured: the last block and the head need not run
                raise _Stop

        return pre_hook

    hooks = [b.register_forward_pre_hook(hook(i), with_kwargs=True) for i, b in enumerate(blocks)]
    device = next(model.parameters()).device
    try:
        for start in range(0, input_ids.shape[0], CAPTURE_BATCH):
            held.clear()
            try:
                model(input_ids=input_ids[start : start + CAPTURE_BATCH].to(device), use_cache=False)
            except _Stop:
                pass
    finally:
        held.clear()
        for h in hooks:
            h.remove()
    return calls, first


def _resolve(value, inputs: dict[int, torch.Tensor]):
    """`value` with each `Link` replaced by that block's current input on this batch."""
    return _map_leaves(value, lambda v: inputs[v.block] if isinstance(v, Link) else v)


def replay_block(
    block: nn.Module, call: BlockCall, hidden: torch.Tensor, inputs: dict[int, torch.Tensor]
) -> torch.Tensor:
    """The block's hidden output on `hidden`; a block returns a tensor or a tuple led by it."""
    args, kwargs = _resolve(call.args, inputs), _resolve(call.kwargs, inputs)
    out = block(hidden, *args, **kwargs) if call.positional else block(*args, hidden_states=hidden, **kwargs)
    return out if isinstance(out, torch.Tensor) else out[0]


def _linked(calls: list[list[BlockCall]]) -> dict[int, set[int]]:
    """block -> the blocks whose inputs its calls link to."""
    found: dict[int, set[int]] = {}
    for i, per_batch in enumerate(calls):
        leaves: list = []
        for call in per_batch:
            _map_leaves((call.args, call.kwargs), leaves.append)
        if targets := {v.block for v in leaves if isinstance(v, Link)}:
            found[i] = targets
    return found


BlockStats = Iterator[tuple[nn.Module, dict[str, nn.Linear], dict[str, LinearStats]]]


@torch.no_grad()
def block_stats(model: nn.Module, input_ids: torch.Tensor, hessian: bool) -> BlockStats:
    """Each block with its linears and their statistics, in order; the caller prunes the block before
    asking for the next one, whose inputs are then the pruned block's outputs (SparseGPT/Wanda's
    sequential scheme). One capture forward, then two forwards of each block (stats, pruned outputs)."""
    calls, hidden = capture_block_calls(model, input_ids)
    linked = _linked(calls)
    needed = {j for targets in linked.values() for j in targets}
    kept: dict[int, list[torch.Tensor]] = {}  # inputs of the blocks some later call links to
    blocks = decoder_blocks(model)
    for i, block in enumerate(blocks):
        if i in needed:
            kept[i] = hidden
        links = [{j: kept[j][b] for j in linked.get(i, ())} for b in range(len(hidden))]
        linears = prunable_linears(block)
        stats, hooks = _stats_hooks(linears, hessian)
        try:
            for b, call in enumerate(calls[i]):
                replay_block(block, call, hidden[b], links[b])
        finally:
            for h in hooks:
                h.remove()
        yield block, linears, stats
        if i + 1 < len(blocks):  # the last block's outputs feed nothing
            hidden = [replay_block(block, call, hidden[b], links[b]) for b, call in enumerate(calls[i])]


@torch.no_grad()
def reference_block_stats(model: nn.Module, input_ids: torch.Tensor, hessian: bool) -> BlockStats:
    """`block_stats` from `capture_reference`: a forward from the embeddings per block."""
    for block in decoder_blocks(model):
        linears = prunable_linears(block)
        yield block, linears, capture_reference(model, block, linears, input_ids, hessian)


@torch.no_grad()
def prune_model(model: nn.Module, tokenizer, settings: SparsitySettings, prune_fn: PruneFn, needs: str,
                reference: bool = False) -> Outcome:  # fmt: skip
    """Prune every prunable linear of every block with `prune_fn`; `needs` is none, norms or hessian.
    `reference` gathers the statistics with the O(L²) `reference_block_stats` (for tests)."""
    calibration = None
    if needs == "none":
        blocks: BlockStats = ((b, prunable_linears(b), {}) for b in decoder_blocks(model))
    else:
        input_ids, calibration = calibration_batch(tokenizer, settings)
        gather = reference_block_stats if reference else block_stats
        blocks = gather(model, input_ids, needs == "hessian")
    total = zeros = uncalibrated = 0
    for _, linears, stats in blocks:
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
