"""Stage 1b: each SSM block learns to reproduce its teacher attention layer.

The teacher runs once over calibration text; for every mapped layer we keep its input residual
stream x and its attention output y. The student block sees the same x and is trained on the
normalised MSE ||mixer(norm(x)) - y||² / ||y||², one block at a time through the shared training
loop, so only one layer's activations and optimizer state are in memory at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from aetheris.distill.config import TrainConfig
from aetheris.distill.trainer import train
from aetheris.model import AetherisForCausalLM
from aetheris.teacher.spec import NormSpec, TeacherSpec


@dataclass
class LayerAlignment:
    block: int
    teacher_layer: int
    loss_before: float
    loss_after: float
    steps: int


@torch.no_grad()
def attention_pairs(
    teacher: nn.Module, input_ids: torch.Tensor, layers: list[int], attention_mask: torch.Tensor | None = None
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """teacher layer -> (its input hidden states, its attention output), both (b, t, d)."""
    pairs: dict[int, list[torch.Tensor]] = {i: [] for i in set(layers)}
    hooks = []
    for i in pairs:
        layer = teacher.model.layers[i]

        def grab_input(module, args, kwargs, i=i):
            pairs[i][:] = [args[0] if args else kwargs["hidden_states"]]

        def grab_output(module, args, output, i=i):
            pairs[i].append(output[0] if isinstance(output, tuple) else output)

        hooks.append(layer.register_forward_pre_hook(grab_input, with_kwargs=True))
        hooks.append(layer.self_attn.register_forward_hook(grab_output))
    try:
        teacher(input_ids=input_ids, attention_mask=attention_mask)
    finally:
        for h in hooks:
            h.remove()
    return {i: (p[0].detach(), p[1].detach()) for i, p in pairs.items()}


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


def residual_branch(block: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What an SSM block adds to the residual stream."""
    y = block.mixer(block.norm(x), mask)
    return y if block.post_norm is None else block.post_norm(y)


def align_block(
    block: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None,
    cfg: TrainConfig,
    output_dir: str | Path,
    resume: bool = False,
) -> tuple[float, float]:
    """Fit the block's residual branch (norm -> mixer -> post-norm, if any) to `y` with the shared
    training loop; returns the loss on all of x before and after."""
    mask = torch.ones(x.shape[:2]) if mask is None else mask.float()

    def full_loss() -> float:
        with torch.no_grad():
            return float(normalised_mse(residual_branch(block, x, mask), y, mask))

    def step_fn(model, batch):
        return {"loss": normalised_mse(residual_branch(model, batch["x"], batch["mask"]), batch["y"], batch["mask"])}

    rows = [{"x": x[i], "y": y[i], "mask": mask[i]} for i in range(x.shape[0])]
    before = full_loss()
    train(block, rows, step_fn, cfg, output_dir, resume=resume, stage="align")
    block.eval()
    return before, full_loss()


def align_student(
    student: AetherisForCausalLM,
    teacher: nn.Module,
    input_ids: torch.Tensor,
    cfg: TrainConfig,
    output_dir: str | Path,
    attention_mask: torch.Tensor | None = None,
    spec: TeacherSpec | None = None,
    resume: bool = False,
) -> list[LayerAlignment]:
    """Align every SSM block of `student` to its mapped teacher attention layer, one at a time."""
    layout, mapping = student.config.layout, student.config.distillation["layer_map"]
    ssm_blocks = [
        (i, mapping[layout[:i].count("S") + layout[:i].count("A")]) for i, c in enumerate(layout) if c == "S"
    ]
    pairs = attention_pairs(teacher, input_ids, [t for _, t in ssm_blocks], attention_mask)
    report = []
    for block_idx, t in ssm_blocks:
        x, y = pairs[t]
        if spec is not None and spec.layers[t].attn_out_norm is not None:  # Gemma: what joins the residual
            with torch.no_grad():
                y = apply_norm(spec.layers[t].attn_out_norm, y)
        block = student.model.layers[block_idx]
        out = Path(output_dir) / f"block-{block_idx:02d}"
        before, after = align_block(block, x.to(block.norm.weight.dtype), y, attention_mask, cfg, out, resume)
        report.append(LayerAlignment(block_idx, t, before, after, cfg.steps))
        print(f"align block {block_idx} <- teacher layer {t}: loss {before:.4f} -> {after:.4f}")
    return report
