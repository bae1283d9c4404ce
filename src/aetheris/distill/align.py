"""Stage 1b: each student block learns to reproduce its teacher layer's part.

The teacher runs once over calibration text; for every mapped layer we keep its input residual
stream x, its attention output and its MLP output. An SSM block sees x and learns the attention's
contribution to the residual stream; an MoE block sees the residual stream where the teacher's
MLP reads it (x + attention for sequential layers, x for parallel ones) and learns the MLP's
contribution, its router included (with the load-balancing and z-losses, so that it does not
collapse onto one expert). The loss is the normalised MSE ||branch(x) - y||² / ||y||² (or
1 - cosine), one block at a time through the shared training loop, so only one layer's
activations and optimizer state are in memory at once. MoE blocks that already reproduce their
MLP (upcycled experts) are left as they are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from aetheris.distill.init import teacher_layer
from aetheris.distill.trainer import train
from aetheris.model import AetherisForCausalLM
from aetheris.model.configuration import AetherisConfig
from aetheris.model.moe import weighted_router_loss
from aetheris.teacher.introspect import introspect, teacher_layers
from aetheris.teacher.spec import LayerSpec, NormSpec, TeacherSpec

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # config.py derives its align choices from this module
    from aetheris.distill.config import TrainConfig


@dataclass
class LayerAlignment:
    block: int
    teacher_layer: int
    loss_before: float
    loss_after: float
    steps: int
    kind: str = "S"  # "S": SSM block <- attention; "M": MoE block <- MLP


@torch.no_grad()
def teacher_activations(
    teacher: nn.Module, input_ids: torch.Tensor, layers: list[int], attention_mask: torch.Tensor | None = None,
    logits_to_keep: int | None = None,
) -> dict[int, dict[str, torch.Tensor]]:
    """teacher layer -> {"x": its input hidden states, "attn": its attention output, "mlp": its MLP
    output}, each (b, t, d), from one forward pass. `logits_to_keep=1` spares the full-vocabulary
    logits nobody reads here (16 x 512 tokens x 262k vocabulary is 8.6 GB in fp32)."""
    acts: dict[int, dict[str, torch.Tensor]] = {i: {} for i in set(layers)}
    hooks = []
    modules = teacher_layers(teacher)
    for i in acts:
        layer = modules[i].block

        def grab_input(module, args, kwargs, i=i):
            acts[i]["x"] = (args[0] if args else kwargs["hidden_states"]).detach()

        def grab(name, i=i):
            def hook(module, args, output):
                acts[i][name] = (output[0] if isinstance(output, tuple) else output).detach()

            return hook

        hooks.append(layer.register_forward_pre_hook(grab_input, with_kwargs=True))
        hooks.append(modules[i].attention.register_forward_hook(grab("attn")))
        hooks.append(modules[i].mlp.register_forward_hook(grab("mlp")))
    extra = {} if logits_to_keep is None else {"logits_to_keep": logits_to_keep}
    try:
        teacher(input_ids=input_ids, attention_mask=attention_mask, **extra)
    finally:
        for h in hooks:
            h.remove()
    return acts


def attention_pairs(
    teacher: nn.Module, input_ids: torch.Tensor, layers: list[int], attention_mask: torch.Tensor | None = None
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """teacher layer -> (its input hidden states, its attention output), both (b, t, d)."""
    acts = teacher_activations(teacher, input_ids, layers, attention_mask)
    return {i: (a["x"], a["attn"]) for i, a in acts.items()}


@torch.no_grad()
def branch_targets(layer: LayerSpec, acts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention, MLP) contributions of teacher `layer` to its residual stream, as an S and an M
    block add them: after the layer's post-norms and Granite's residual multiplier."""
    attn = acts["attn"] if layer.attn_out_norm is None else apply_norm(layer.attn_out_norm, acts["attn"])
    mlp = acts["mlp"] if layer.mlp_out_norm is None else apply_norm(layer.mlp_out_norm, acts["mlp"])
    return attn * layer.residual_scale, mlp * layer.residual_scale


def apply_norm(norm: NormSpec, x: torch.Tensor) -> torch.Tensor:
    x32 = x.float()
    if norm.kind == "layernorm":
        x32 = x32 - x32.mean(-1, keepdim=True)
    y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.scale().float()
    return (y if norm.bias is None else y + norm.bias.float()).to(x.dtype)


def normalised_mse(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    err = (pred.float() - target.float()).pow(2).sum(-1)
    ref = target.float().pow(2).sum(-1)
    if mask is not None:
        err, ref = err * mask, ref * mask
    return err.sum() / ref.sum().clamp(min=1e-12)


def cosine_distance(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over (unmasked) positions of 1 - cos(pred, target)."""
    d = 1 - torch.nn.functional.cosine_similarity(pred.float(), target.float(), dim=-1)
    if mask is None:
        return d.mean()
    return (d * mask).sum() / mask.sum().clamp(min=1)


LOSSES = {"mse": normalised_mse, "cosine": cosine_distance}
# What each block sees while it is aligned (see align_student).
ALIGN_INPUTS = ("student", "teacher")


def residual_branch(
    block: nn.Module, x: torch.Tensor, mask: torch.Tensor, config: AetherisConfig | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """What a block adds to the residual stream, and its extra training loss: for an MoE block, with
    the student's `config`, the router losses the model itself adds to its loss (else 0)."""
    h = block.norm(x)
    extra = torch.zeros((), device=x.device)
    if block.kind == "M":
        y, logits = block.mixer(h)
        if config is not None:
            extra = weighted_router_loss([logits], config, mask.reshape(-1))[2]
    else:
        y = block.mixer(h, mask)
    y = y if block.post_norm is None else block.post_norm(y)
    return y * block.residual_multiplier, extra


def align_block(
    block: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None,
    cfg: TrainConfig,
    output_dir: str | Path,
    resume: bool = False,
    loss: str = "mse",
    config: AetherisConfig | None = None,
) -> tuple[float, float]:
    """Fit the block's residual branch (norm -> mixer -> post-norm, if any) to `y` with the shared
    training loop; returns the loss on all of x before and after (the router's losses not counted).
    A block that ends worse than it started gets its initial weights back."""
    mask = torch.ones(x.shape[:2]) if mask is None else mask.float()
    loss_fn = LOSSES[loss]

    def full_loss() -> float:
        with torch.no_grad():
            return float(loss_fn(residual_branch(block, x, mask)[0], y, mask))

    def step_fn(model, batch):
        pred, extra = residual_branch(model, batch["x"], batch["mask"], config)
        return {"loss": loss_fn(pred, batch["y"], batch["mask"]) + extra}

    rows = [{"x": x[i], "y": y[i], "mask": mask[i]} for i in range(x.shape[0])]
    before = full_loss()
    start = {k: v.detach().clone() for k, v in block.state_dict().items()}
    train(block, rows, step_fn, cfg, output_dir, resume=resume, stage="align")
    block.eval()
    after = full_loss()
    if not after < before:  # a budget too small to help (experts copied from the MLP): keep the start
        block.load_state_dict(start)
        logger.info("align: loss %.4f -> %.4f did not improve; the block keeps its initial weights", before, after)
        after = before
    return before, after


def _pairs_with_previous(config: AetherisConfig, block: int) -> bool:
    """A parallel student's M block reads the input of the S/A block before it (see AetherisModel)."""
    return config.parallel_residual and block > 0 and config.layout[block - 1] in "SA"


@torch.no_grad()
def student_stream(
    student: AetherisForCausalLM, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, block: int
) -> torch.Tensor:
    """The residual stream entering `block` of the student, as its blocks are now."""
    was_training = student.training
    student.eval()
    out = student.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)
    student.train(was_training)
    return out.hidden_states[block].detach()


def align_student(
    student: AetherisForCausalLM,
    teacher: nn.Module,
    input_ids: torch.Tensor,
    cfg: TrainConfig,
    output_dir: str | Path,
    attention_mask: torch.Tensor | None = None,
    spec: TeacherSpec | None = None,
    resume: bool = False,
    moe: bool = True,
    loss: str = "mse",
    moe_lr_scale: float = 0.3,
    inputs: str = "student",
    exact: float = 1e-6,
) -> list[LayerAlignment]:
    """Align every SSM block of `student` to its mapped teacher attention layer and, with `moe`,
    every MoE block to its teacher MLP, one block at a time. MoE blocks train at `moe_lr_scale`
    times `cfg.lr`: their experts start as exact slices of the teacher's MLP, which a learning rate
    fit for the freshly initialised SSM parts would wreck. A block whose loss is already below
    `exact` (an upcycled MoE reproduces its MLP) is reported and left untrained.

    `inputs="teacher"`: a block sees the teacher's own stream at its mapped layer and learns that
    layer's contribution. `inputs="student"`: blocks are aligned in order, each on the stream the
    student's earlier (already aligned) blocks produce, and learns to bring it to the teacher's
    stream after its mapped layer's attention (S) or whole layer (M). A student that keeps a
    third of the teacher's layers sees at block i a stream the teacher never had there; this way
    every block is trained on the inputs it will get, and corrects what came before it."""
    if inputs not in ALIGN_INPUTS:
        raise ValueError(f"align inputs={inputs!r}: expected one of {ALIGN_INPUTS}")
    spec = spec if spec is not None else introspect(teacher)
    config = student.config
    blocks = [(i, teacher_layer(config, i)) for i, c in enumerate(config.layout) if c == "S" or (c == "M" and moe)]
    acts = teacher_activations(teacher, input_ids, sorted({t for _, t in blocks}), attention_mask, logits_to_keep=1)
    report = []
    for block_idx, t in blocks:
        block = student.model.layers[block_idx]
        layer, a = spec.layers[t], acts[t]
        with torch.no_grad():
            attn, mlp = branch_targets(layer, a)
            if inputs == "student":
                x = student_stream(student, input_ids, attention_mask, block_idx)
                y = a["x"] + attn + (mlp if block.kind == "M" else 0) - x
                if block.kind == "M" and _pairs_with_previous(config, block_idx):  # it reads the pair's input
                    x = student_stream(student, input_ids, attention_mask, block_idx - 1)
            elif block.kind == "S":
                x, y = a["x"], attn
            else:  # the MLP reads the stream after the attention (parallel blocks: before it)
                x = a["x"] if layer.parallel else a["x"] + attn
                y = mlp
        x = x.to(next(block.parameters()).dtype)  # block.norm may be the identity (OLMo 2)
        out = Path(output_dir) / f"block-{block_idx:02d}"
        m = torch.ones(x.shape[:2]) if attention_mask is None else attention_mask.float()
        with torch.no_grad():
            start = float(LOSSES[loss](residual_branch(block, x, m)[0], y, m))
        if start < exact:
            before = after = start
            steps = 0
        else:
            block_cfg = cfg if block.kind == "S" else cfg.model_copy(update={"lr": cfg.lr * moe_lr_scale})
            before, after = align_block(block, x, y, attention_mask, block_cfg, out, resume, loss, config)
            steps = cfg.steps
        report.append(LayerAlignment(block_idx, t, before, after, steps, block.kind))
        what = "attention" if block.kind == "S" else "MLP"
        logger.info("align block %d (%s) <- teacher layer %d %s: loss %.4f -> %.4f", block_idx, block.kind, t, what,
                    before, after)  # fmt: skip
    return report
