"""One training loop for every distillation stage, on accelerate (CPU, multi-process, GPUs, DDP/FSDP).

Each stage supplies `step_fn(model, batch) -> {"loss": tensor, **metrics}`; the loop does the
rest: AdamW, cosine schedule with warmup, gradient accumulation and clipping, checkpoints that
resume bit-for-bit, a stop on a non-finite loss, a progress bar and metrics (JSONL, TensorBoard).

Launch: `python stage.py` (one process, CPU or GPU); `accelerate launch --multi_gpu --num_processes N
stage.py` (N GPUs with DDP, or N CPU processes with gloo on a machine without GPUs);
`accelerate launch --config_file fsdp.yaml stage.py` (FSDP; resuming needs the same process count).

Data order is a pure function of (seed, sample offset): epoch e is a permutation drawn with seed
+ e, and optimizer step s takes the global samples [s·G, (s+1)·G), G = batch_size · grad_accum ·
processes. Micro-batch j of process r is the slice [(j·P + r)·b, (j·P + r + 1)·b) of that
window, so one process with batch 4 and two with batch 2 see the same global batch. Resuming
needs only the step index.

Checkpoint folder `checkpoints/step-NNNNNNNN/` (written as a temp folder, then renamed):
  model.safetensors        full state dict; tied weights stored once (aliases in the header)
  optimizer-rankR.pt       torch.save of the optimizer's state dict (plain tensors and numbers)
  rng-rankR.pt             python / numpy / torch (/ cuda) RNG states as plain tensors and numbers
  trainer_state.json       step, samples seen, scheduler state, config
Every .pt file loads with torch.load(weights_only=True).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, set_seed
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import get_cosine_schedule_with_warmup

from aetheris.distill.config import TrainConfig

StepFn = Callable[[torch.nn.Module, dict[str, Any]], dict[str, Any]]
CKPT_RE = re.compile(r"^step-(\d{8})$")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before the optimizer used it."""


@dataclass
class TrainResult:
    step: int  # optimizer steps done
    last_checkpoint: Path | None
    metrics_path: Path


# ---------------------------------------------------------------- data order


class _Order:
    """Global sample offset -> dataset index; one permutation per epoch, cached."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self._epoch, self._perm = n, seed, -1, np.arange(0)

    def __call__(self, offset: int) -> int:
        epoch, pos = divmod(offset, self.n)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return int(self._perm[pos])


def default_collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors key by key; other values become lists."""
    out = {}
    for key in examples[0]:
        vals = [e[key] for e in examples]
        out[key] = (
            torch.stack([torch.as_tensor(v) for v in vals])
            if isinstance(vals[0], torch.Tensor | int | float)
            else vals
        )
    return out


# ---------------------------------------------------------------- checkpoint files


def _save_model(state: dict[str, torch.Tensor], path: Path) -> None:
    tensors, aliases, seen = {}, {}, {}
    for name, t in state.items():
        key = (t.data_ptr(), t.shape, t.stride()) if t.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]  # tied weight: store once
            continue
        if key is not None:
            seen[key] = name
        tensors[name] = t.detach().cpu().contiguous()
    save_file(tensors, str(path), metadata={"aliases": json.dumps(aliases)})


def load_model_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint's model.safetensors as a full state dict (tied aliases filled in)."""
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    for alias, name in aliases.items():
        state[alias] = state[name]
    return state


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def find_last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (temp folders of an interrupted save are ignored)."""
    root = Path(output_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if CKPT_RE.match(p.name)) if root.exists() else []
    return done[-1] if done else None


# ---------------------------------------------------------------- the loop


_TB_WARNED = False


def _step_of(line: str) -> float:
    """A metrics line's step; a line torn by a kill mid-write counts as past the checkpoint."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


class _Metrics:
    """JSONL always; TensorBoard when the package is installed (warns once otherwise)."""

    def __init__(self, output_dir: Path, keep_until: int | None, enabled: bool) -> None:
        self.path = output_dir / "metrics.jsonl"
        self.enabled, self.tb = enabled, None
        if not enabled:
            return
        if keep_until is not None and self.path.exists():
            # Steps logged after the checkpoint we resume from are redone: drop their old lines.
            kept = [ln for ln in self.path.read_text().splitlines() if _step_of(ln) <= keep_until]
            tmp = self.path.with_name(".metrics.jsonl.tmp")
            tmp.write_text("".join(ln + "\n" for ln in kept))
            os.replace(tmp, self.path)
        elif keep_until is None:
            self.path.unlink(missing_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(output_dir / "tensorboard"))
        except ImportError:
            global _TB_WARNED
            if not _TB_WARNED:
                _TB_WARNED = True
                warnings.warn("tensorboard is not installed: metrics go to metrics.jsonl only", stacklevel=3)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self.tb.add_scalar(key, value, record["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _scalar(v: Any) -> float | None:
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return float(v.detach().float())
    return float(v) if isinstance(v, int | float) else None


def train(
    model: torch.nn.Module,
    dataset: Sequence[dict[str, Any]],
    step_fn: StepFn,
    cfg: TrainConfig,
    output_dir: str | Path,
    *,
    resume: bool = False,
    collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]] = default_collate,
    parameters: Sequence[torch.nn.Parameter] | None = None,
    accelerator: Accelerator | None = None,
    stage: str = "train",
) -> TrainResult:
    """Train `model` for cfg.steps optimizer steps on `dataset` (map-style: len + [i] -> example).

    step_fn(model, batch) returns {"loss": scalar tensor, **metrics}; it gets the prepared
    (possibly DDP/FSDP-wrapped) model and a collated micro-batch already on the device.
    `parameters`: what to train (default: every parameter that requires grad); all others get
    requires_grad=False. With resume=True the newest complete checkpoint in output_dir/checkpoints
    is continued (fresh start if none). The trained weights end up in `model` itself.
    Metrics per logged step go to output_dir/metrics.jsonl (and TensorBoard): loss, lr, grad_norm,
    tokens_per_s, samples_seen and the means of step_fn's other scalar outputs.
    """
    output_dir = Path(output_dir)
    if len(dataset) == 0:
        raise ValueError("train: the dataset is empty")
    precision = "bf16" if cfg.bf16 else "no"
    if (
        accelerator is None
        and AcceleratorState._shared_state
        and AcceleratorState().mixed_precision != precision
    ):
        # A later stage in the same process with another precision: accelerate keeps one global
        # state; drop it (the process group, held by PartialState, stays).
        AcceleratorState._reset_state(reset_partial_state=False)
    # cpu=True where there is no GPU: that is what makes a multi-process launch on CPU use gloo
    # (accelerate otherwise falls back to one process per launch). find_unused_parameters: a stage
    # may leave blocks out of the graph (align trains one SSM at a time).
    acc = accelerator or Accelerator(
        mixed_precision=precision,
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    main = acc.is_main_process
    set_seed(cfg.seed)
    if cfg.gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        elif hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            raise ValueError(f"train: gradient_checkpointing is on but {type(model).__name__} cannot do it")

    ckpt = find_last_checkpoint(output_dir) if resume else None
    state: dict[str, Any] = {}
    if ckpt is not None:
        state = json.loads((ckpt / "trainer_state.json").read_text())
        model.load_state_dict(load_model_state(ckpt / "model.safetensors"))

    if parameters is not None:
        params = list(parameters)
        chosen = {id(p) for p in params}
        for p in model.parameters():  # frozen means no gradient at all, not just no update
            p.requires_grad_(id(p) in chosen)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train: no parameter to train (all frozen)")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]  # biases, norms, SSM scalars: no weight decay
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    model, optimizer = acc.prepare(model, optimizer)
    # Not acc.prepare'd: accelerate would step it once per process per step.
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.steps)
    rank, world = acc.process_index, acc.num_processes
    if ckpt is not None:
        if state.get("num_processes", 1) != world:
            raise ValueError(
                f"{ckpt}: saved by {state.get('num_processes', 1)} process(es), this run has {world}: "
                "resume with the same number of processes (optimizer and RNG state are per process)"
            )
        optimizer.load_state_dict(torch.load(ckpt / f"optimizer-rank{rank}.pt", weights_only=True))
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(torch.load(ckpt / f"rng-rank{rank}.pt", weights_only=True))
    start = int(state.get("step", 0))
    samples_seen = int(state.get("samples_seen", 0))

    order = _Order(len(dataset), cfg.seed)
    b, accum = cfg.batch_size, cfg.grad_accum
    global_batch = b * accum * world
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
    metrics = _Metrics(output_dir, start if ckpt is not None else None, main)
    # FSDP clips through the wrapped model (its flat parameters); elsewhere the trained ones.
    clip_params = list(model.parameters()) if acc.distributed_type == DistributedType.FSDP else params
    last_ckpt = ckpt

    def save(step: int) -> Path:
        root = output_dir / "checkpoints"
        final, tmp = root / f"step-{step:08d}", root / f".tmp-step-{step:08d}"
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        model_state = acc.get_state_dict(model)  # gathers FSDP shards; a collective, every rank calls it
        if main:
            _save_model(model_state, tmp / "model.safetensors")
            (tmp / "trainer_state.json").write_text(json.dumps({
                "step": step, "samples_seen": samples_seen, "global_batch": global_batch, "stage": stage,
                "num_processes": world,
                "scheduler": scheduler.state_dict(), "config": cfg.model_dump(),
            }, indent=2))  # fmt: skip
        torch.save(optimizer.state_dict(), tmp / f"optimizer-rank{rank}.pt")
        torch.save(_rng_state(), tmp / f"rng-rank{rank}.pt")
        acc.wait_for_everyone()
        if main:
            os.replace(tmp, final)  # a killed save leaves only a .tmp folder, never a half checkpoint
            for old in sorted(p for p in root.glob("step-*") if CKPT_RE.match(p.name))[
                : -cfg.keep_checkpoints
            ]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    model.train()
    columns = (
        TextColumn(f"[bold]{stage}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    )  # fmt: skip
    progress = Progress(*columns, disable=not main)
    tokens_since, t_since = 0, time.perf_counter()
    try:
        with progress:
            task = progress.add_task(stage, total=cfg.steps, completed=start, loss="-", tps="-")
            for step in range(start + 1, cfg.steps + 1):
                window = samples_seen
                losses, extra = [], {}
                n_tokens = 0
                for j in range(accum):
                    first = window + (j * world + rank) * b
                    batch = collate_fn([dataset[order(first + i)] for i in range(b)])
                    n_tokens += (
                        int(batch["attention_mask"].sum())
                        if "attention_mask" in batch
                        else (int(batch["input_ids"].numel()) if "input_ids" in batch else b)
                    )
                    batch = _to_device(batch, acc.device)
                    sync = contextlib.nullcontext() if j == accum - 1 else acc.no_sync(model)
                    with sync, acc.autocast():
                        out = step_fn(model, batch)
                        loss = out["loss"]
                    acc.backward(loss / accum)
                    losses.append(loss.detach().float())
                    for key, value in out.items():
                        if key != "loss" and (v := _scalar(value)) is not None:
                            extra[key] = extra.get(key, 0.0) + v / accum
                samples_seen += global_batch
                # Mean over micro-batches and processes; the extra metrics travel in the same reduce.
                keys = sorted(extra)
                local = torch.tensor(
                    [torch.stack(losses).mean().item(), *(extra[k] for k in keys)], device=acc.device
                )
                reduced = acc.reduce(local, reduction="mean").tolist()
                step_loss, extra = reduced[0], dict(zip(keys, reduced[1:]))
                if not math.isfinite(step_loss):
                    raise NonFiniteLossError(
                        f"{stage}: step {step}: loss is {step_loss}; stopping before the update. "
                        f"Last good checkpoint: {last_ckpt if last_ckpt is not None else 'none (no checkpoint yet)'}"
                    )
                grad_norm = acc.clip_grad_norm_(clip_params, cfg.clip) if cfg.clip is not None else None
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)

                tokens_since += n_tokens * world
                if step % cfg.log_every == 0 or step == cfg.steps:
                    elapsed = time.perf_counter() - t_since
                    tps = tokens_since / max(elapsed, 1e-9)
                    record = {"step": step, "loss": step_loss, "lr": scheduler.get_last_lr()[0],
                              "tokens_per_s": tps, "samples_seen": samples_seen}  # fmt: skip
                    if grad_norm is not None:
                        record["grad_norm"] = float(grad_norm)
                    record.update(extra)
                    metrics.log(record)
                    tokens_since, t_since = 0, time.perf_counter()
                    progress.update(task, loss=f"{step_loss:.4f}", tps=f"{tps:,.0f}")
                progress.update(task, completed=step)
                if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps:
                    last_ckpt = save(step)
    finally:
        metrics.close()
    return TrainResult(step=cfg.steps, last_checkpoint=last_ckpt, metrics_path=metrics.path)
