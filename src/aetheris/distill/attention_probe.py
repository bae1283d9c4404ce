"""Which teacher layers a hybrid keeps as attention: replace one layer at a time and measure.

For each candidate teacher layer t, the teacher runs with only layer t's attention swapped for
its SSM block (initialised from that layer as init.py does, then a short align of that block
alone, align.py's `align_block`), and the held-out KL (T = 1) of that model to the unchanged
teacher is the layer's score. A higher score means the layer's attention is harder to replace:
keep attention there (`student.attention_layers: probe`).

Everything else stays exact (every other attention and every MLP), so the score is the mixer's
alone; a student with split experts would mix in each MoE block's own error. And since the
layers before t are exact, the teacher's stream at t, which the block is aligned on, is also
what it sees when scored.

The table is written to <output_dir>/attention-probe.json after every layer (temp + rename),
under a key of everything that decides it, so a killed probe resumes at the next layer and a
rerun with the same settings reuses it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aetheris.distill.align import align_block, branch_targets, teacher_activations
from aetheris.distill.config import TrainConfig
from aetheris.distill.init import init_student, student_config
from aetheris.distill.kd import OnlineTeacher
from aetheris.distill.losses import KDObjective, TeacherHidden
from aetheris.teacher.introspect import teacher_layers
from aetheris.teacher.spec import TeacherSpec

logger = logging.getLogger(__name__)

PROBE_FILE = "attention-probe.json"


@dataclass
class LayerProbe:
    teacher_layer: int
    held_out_kl: float  # KL(teacher || teacher with this layer's attention replaced), per token, T = 1
    align_loss_before: float
    align_loss_after: float


def ssm_block(spec: TeacherSpec, layer: int, seed: int = 0, **overrides: Any) -> nn.Module:
    """The SSM block init.py makes from teacher `layer`: the one block of an `S` student mapped onto
    it (its embeddings are dropped). Built alone, so its random parts (z, dt, A, D, conv) depend on
    the seed and the layer only, not on which other layers are probed."""
    config = student_config(spec, layout="S", layer_map=[layer], **overrides)
    return init_student(spec, config, seed=seed).model.layers[0]


@contextmanager
def replaced_attention(teacher: nn.Module, layer: int, block: nn.Module, mask: torch.Tensor) -> Iterator[None]:
    """Within the block, teacher layer `layer`'s attention module returns the SSM mixer's output.

    The attention module reads the teacher's pre-norm output and its result goes through the
    teacher's post-norm and residual multiplier: exactly what an `S` block (norm, mixer,
    post-norm, multiplier, all copied from this layer) adds to the stream. `mask` (b, t)."""
    module = teacher_layers(teacher)[layer].attention
    dtype = next(block.parameters()).dtype

    def hook(mod, args, kwargs, output):  # noqa: ANN001, ANN202 - torch's hook signature
        h = args[0] if args else kwargs["hidden_states"]
        y = block.mixer(h.to(dtype), mask).to(h.dtype)
        return (y, *output[1:]) if isinstance(output, tuple) else y

    handle = module.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _batches(rows: Sequence[dict[str, torch.Tensor]], size: int) -> list[dict[str, torch.Tensor]]:
    return [{k: torch.stack([r[k] for r in rows[i : i + size]]) for k in ("input_ids", "attention_mask")}
            for i in range(0, len(rows), size)]  # fmt: skip


@torch.no_grad()
def _kl(teacher: OnlineTeacher, batch: dict[str, torch.Tensor], reference: TeacherHidden,
        objective: KDObjective) -> tuple[float, int]:  # fmt: skip
    """Summed KL of the (patched) teacher on `batch` against `reference`, and the tokens counted."""
    s = teacher(batch)
    res = objective(s.hidden, s.head, reference, attention_mask=batch["attention_mask"], student_logit_fn=s.logit_fn)
    return float(res.kl) * res.n_tokens, res.n_tokens


def probe_key(teacher_name: str, cfg: TrainConfig, **settings: Any) -> dict[str, Any]:
    """What decides each layer's score (not which layers are probed: each is probed on its own); a
    stored table under another key is not reused."""
    return {"teacher": teacher_name, "align": cfg.model_dump(mode="json"), **settings}


def _read(path: Path, key: dict[str, Any]) -> dict[int, LayerProbe]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    if data.get("key") != key:
        logger.info("attention probe: %s was made under other settings; probing again", path)
        return {}
    return {r["teacher_layer"]: LayerProbe(**r) for r in data["layers"]}


def _write(path: Path, key: dict[str, Any], done: dict[int, LayerProbe]) -> None:
    ranked = sorted(done.values(), key=lambda r: (-r.held_out_kl, r.teacher_layer))
    data = {"key": key, "layers": [asdict(done[t]) for t in sorted(done)],
            "ranking": [r.teacher_layer for r in ranked]}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def probe_attention(
    teacher: nn.Module,
    spec: TeacherSpec,
    layers: Sequence[int],
    calibration: dict[str, torch.Tensor],
    held_out: Sequence[dict[str, torch.Tensor]],
    cfg: TrainConfig,
    output_dir: str | Path,
    key: dict[str, Any],
    loss: str = "mse",
    batch_size: int = 2,
    bf16: bool = False,
    **overrides: Any,
) -> list[LayerProbe]:
    """One `LayerProbe` per teacher layer in `layers` (in that order).

    `calibration`: {"input_ids", "attention_mask"} (n, t) the blocks are aligned on; `held_out`:
    rows ({"input_ids", "attention_mask"}, each (t,)) the KL is measured on; `cfg`: the align
    budget of each block (train.align, its steps as the probe sets them); `overrides`: the
    student's AetherisConfig fields. Writes output_dir/attention-probe.json and, while a block is
    aligned, output_dir/runs/probe/layer-NN (its metrics; checkpoints are removed after)."""
    out = Path(output_dir)
    table = out / PROBE_FILE
    done = _read(table, key)
    todo = [t for t in dict.fromkeys(layers) if t not in done]
    if todo:
        ids, mask = calibration["input_ids"], calibration["attention_mask"]
        acts = teacher_activations(teacher, ids, todo, mask, logits_to_keep=1)
        online = OnlineTeacher(teacher)
        objective = KDObjective(temperature=1.0, chunk_size=256)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
        batches = _batches(held_out, batch_size)
        with autocast:
            references = [online(b) for b in batches]  # the unchanged teacher, once
        for n, t in enumerate(todo, 1):
            block = ssm_block(spec, t, seed=cfg.seed, **overrides)
            y = branch_targets(spec.layers[t], acts[t])[0]
            x = acts[t]["x"].to(next(block.parameters()).dtype)
            run_dir = out / "runs" / "probe" / f"layer-{t:02d}"
            before, after = align_block(block, x, y, mask, cfg, run_dir, loss=loss)
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            block.eval()
            total = count = 0.0
            for batch, ref in zip(batches, references):
                with replaced_attention(teacher, t, block, batch["attention_mask"]), autocast:
                    s, c = _kl(online, batch, ref, objective)
                total, count = total + s, count + c
            done[t] = LayerProbe(t, total / max(count, 1), before, after)
            _write(table, key, done)
            logger.info("attention probe %d/%d: teacher layer %d replaced -> held-out KL %.4f (align %.4f -> %.4f)",
                        n, len(todo), t, done[t].held_out_kl, before, after)  # fmt: skip
    ranked = sorted((done[t] for t in dict.fromkeys(layers)), key=lambda r: -r.held_out_kl)
    logger.info("attention probe: layers by held-out KL when replaced: %s",
                ", ".join(f"{r.teacher_layer}: {r.held_out_kl:.4f}" for r in ranked))  # fmt: skip
    return [done[t] for t in layers]
