"""One training loop for every distillation stage, on accelerate (CPU, multi-process, GPUs, DDP/FSDP).

Each stage supplies `step_fn(model, batch) -> {"loss": tensor, **metrics}`; the loop does the
rest: the config's optimizer and schedule (`optim.py`), gradient accumulation and clipping,
checkpoints that resume the same losses (`checkpoint.py`: bit for bit on the same machine, where
the same ops run on the same shapes; to rounding on another CPU), a stop on a non-finite loss, a
progress bar and metrics (`metrics.py`: JSONL, TensorBoard).

Launch: `python stage.py` (one process, CPU or GPU); `accelerate launch --multi_gpu --num_processes N
stage.py` (N GPUs with DDP, or N CPU processes with gloo on a machine without GPUs);
`accelerate launch --config_file fsdp.yaml stage.py` (FSDP; resuming needs the same process count).

Data order is a pure function of (seed, sample offset): epoch e is a permutation drawn with seed
+ e, and optimizer step s takes the global samples [s·G, (s+1)·G), G = batch_size · grad_accum ·
processes. Micro-batch j of process r is the slice [(j·P + r)·b, (j·P + r + 1)·b) of that
window, so one process with batch 4 and two with batch 2 see the same global batch. Resuming
needs only the step index. A stage may replace that order (`order`: offset -> index, e.g. group
DRO's q-weighted draws) and keep training state of its own beside the model's (`hooks`: updated
after every optimizer step, logged, saved in each checkpoint and restored on resume).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, set_seed

from aetheris.distill.checkpoint import (
    find_last_checkpoint,
    read_trainer_state,
    restore_optimizer,
    save_checkpoint,
)
from aetheris.distill.metrics import MetricsLog, Throughput, progress_bar, scalar
from aetheris.distill.optim import build_optimizer, build_scheduler
from aetheris.precision import cpu_summary, resolve_bf16

if TYPE_CHECKING:  # config.py imports align.py, which imports this module
    from aetheris.distill.config import TrainConfig

logger = logging.getLogger(__name__)
StepFn = Callable[[torch.nn.Module, dict[str, Any]], dict[str, Any]]
Collate = Callable[[list[dict[str, Any]]], dict[str, Any]]


class StepHook(Protocol):
    """Training state beside the model's, advanced once per optimizer step (e.g. group DRO's q)."""

    name: str  # its key in the checkpoint's trainer_state.json

    def end_step(self, acc: Accelerator, samples_seen: int) -> dict[str, float]:
        """After the optimizer step (every process calls it); the metrics to log for this step."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state; saved in every checkpoint."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before the optimizer used it."""


@dataclass
class TrainResult:
    step: int  # optimizer steps done
    last_checkpoint: Path | None
    metrics_path: Path


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


def _accelerator(cfg: TrainConfig, stage: str = "train") -> Accelerator:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = "bf16" if resolve_bf16(cfg.bf16, device, stage) else "no"
    logger.info("%s: mixed precision %s on %s", stage, precision, cpu_summary() if device == "cpu" else device)
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != precision:
        # A later stage in the same process with another precision: accelerate keeps one global
        # state; drop it (the process group, held by PartialState, stays).
        AcceleratorState._reset_state(reset_partial_state=False)
    # cpu=True where there is no GPU: that is what makes a multi-process launch on CPU use gloo
    # (accelerate otherwise falls back to one process per launch). find_unused_parameters: a stage
    # may leave blocks out of the graph (align trains one SSM at a time).
    return Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available(),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])  # fmt: skip


def _enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise ValueError(f"train: gradient_checkpointing is on but {type(model).__name__} cannot do it")


def _trainable(model: torch.nn.Module, parameters: Sequence[torch.nn.Parameter] | None) -> list[torch.nn.Parameter]:
    if parameters is not None:
        params = list(parameters)
        chosen = {id(p) for p in params}
        for p in model.parameters():  # frozen means no gradient at all, not just no update
            p.requires_grad_(id(p) in chosen)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train: no parameter to train (all frozen)")
    return params


def _restore_hooks(ckpt: Path, state: dict[str, Any], hooks: Sequence[StepHook]) -> None:
    saved = state.get("hooks", {})
    for hook in hooks:
        if hook.name not in saved:
            raise ValueError(f"{ckpt}: no {hook.name} state in this checkpoint: it was written by a run "
                             f"without {hook.name}; resume with the config that wrote it")
        hook.load_state_dict(saved[hook.name])


def _tokens(batch: dict[str, Any], b: int) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel()) if "input_ids" in batch else b


@dataclass
class _Loop:
    """What one optimizer step needs, prepared once by `train`."""

    acc: Accelerator
    model: torch.nn.Module
    dataset: Sequence[dict[str, Any]]
    step_fn: StepFn
    collate: Collate
    order: Callable[[int], int]
    cfg: TrainConfig

    def step(self, window: int) -> tuple[float, dict[str, float], int]:
        """Forward and backward over this process's micro-batches of the global window starting
        at sample `window`; (loss, other metrics, both averaged over micro-batches and processes; tokens)."""
        acc, b, accum = self.acc, self.cfg.batch_size, self.cfg.grad_accum
        losses, extra, n_tokens = [], {}, 0
        for j in range(accum):
            first = window + (j * acc.num_processes + acc.process_index) * b
            batch = self.collate([self.dataset[self.order(first + i)] for i in range(b)])
            n_tokens += _tokens(batch, b)
            batch = {k: v.to(acc.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            sync = contextlib.nullcontext() if j == accum - 1 else acc.no_sync(self.model)
            with sync, acc.autocast():
                out = self.step_fn(self.model, batch)
            acc.backward(out["loss"] / accum)
            losses.append(out["loss"].detach().float())
            for key, value in out.items():
                if key != "loss" and (v := scalar(value)) is not None:
                    extra[key] = extra.get(key, 0.0) + v / accum
        # The extra metrics travel in the same reduce as the loss.
        keys = sorted(extra)
        local = torch.tensor([torch.stack(losses).mean().item(), *(extra[k] for k in keys)], device=acc.device)
        reduced = acc.reduce(local, reduction="mean").tolist()
        return reduced[0], dict(zip(keys, reduced[1:])), n_tokens


def train(
    model: torch.nn.Module,
    dataset: Sequence[dict[str, Any]],
    step_fn: StepFn,
    cfg: TrainConfig,
    output_dir: str | Path,
    *,
    resume: bool = False,
    collate_fn: Collate = default_collate,
    parameters: Sequence[torch.nn.Parameter] | None = None,
    accelerator: Accelerator | None = None,
    stage: str = "train",
    order: Callable[[int], int] | None = None,
    hooks: Sequence[StepHook] = (),
) -> TrainResult:
    """Train `model` for cfg.steps optimizer steps on `dataset` (map-style: len + [i] -> example).

    step_fn(model, batch) returns {"loss": scalar tensor, **metrics}; it gets the prepared
    (possibly DDP/FSDP-wrapped) model and a collated micro-batch already on the device.
    `parameters`: what to train (default: every parameter that requires grad); all others get
    requires_grad=False. With resume=True the newest complete checkpoint in output_dir/checkpoints
    is continued (fresh start if none). The trained weights end up in `model` itself.
    Metrics per logged step go to output_dir/metrics.jsonl (and TensorBoard): loss, lr, grad_norm,
    tokens_per_s, samples_seen and the means of step_fn's other scalar outputs.
    `order`: global sample offset -> dataset index (default: a permutation per epoch, see the
    module docstring); `hooks`: see `StepHook` (their metrics join each logged step's).
    """
    output_dir = Path(output_dir)
    if len(dataset) == 0:
        raise ValueError("train: the dataset is empty")
    acc = accelerator or _accelerator(cfg, stage)
    set_seed(cfg.seed)
    if cfg.gradient_checkpointing:
        _enable_gradient_checkpointing(model)
    ckpt = find_last_checkpoint(output_dir) if resume else None
    state = read_trainer_state(ckpt, model) if ckpt is not None else {}
    params = _trainable(model, parameters)
    model, optimizer = acc.prepare(model, build_optimizer(params, cfg))
    scheduler = build_scheduler(optimizer, cfg)  # not acc.prepare'd: it would step once per process per step
    if ckpt is not None:
        restore_optimizer(ckpt, state, optimizer, scheduler, acc.process_index, acc.num_processes)
        _restore_hooks(ckpt, state, hooks)
    if acc.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    start, samples_seen = int(state.get("step", 0)), int(state.get("samples_seen", 0))
    metrics = MetricsLog(output_dir, start if ckpt is not None else None, acc.is_main_process)
    loop = _Loop(acc, model, dataset, step_fn, collate_fn, order or _Order(len(dataset), cfg.seed), cfg)
    # FSDP clips through the wrapped model (its flat parameters); elsewhere the trained ones.
    clip_params = list(model.parameters()) if acc.distributed_type == DistributedType.FSDP else params
    global_batch = cfg.batch_size * cfg.grad_accum * acc.num_processes
    last_ckpt, rate = ckpt, Throughput()
    model.train()
    try:
        with progress_bar(stage, acc.is_main_process) as progress:
            task = progress.add_task(stage, total=cfg.steps, completed=start, loss="-", tps="-")
            for step in range(start + 1, cfg.steps + 1):
                loss, extra, n_tokens = loop.step(samples_seen)
                samples_seen += global_batch
                if not math.isfinite(loss):
                    raise NonFiniteLossError(
                        f"{stage}: step {step}: loss is {loss}; stopping before the update. "
                        f"Last good checkpoint: {last_ckpt if last_ckpt is not None else 'none (no checkpoint yet)'}"
                    )
                grad_norm = acc.clip_grad_norm_(clip_params, cfg.clip) if cfg.clip is not None else None
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                for hook in hooks:
                    extra |= hook.end_step(acc, samples_seen)
                rate.add(n_tokens * acc.num_processes)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    record = {"step": step, "loss": loss, "lr": scheduler.get_last_lr()[0],
                              "tokens_per_s": rate.take(), "samples_seen": samples_seen}  # fmt: skip
                    if grad_norm is not None:
                        record["grad_norm"] = float(grad_norm)
                    metrics.log({**record, **extra})
                    progress.update(task, loss=f"{loss:.4f}", tps=f"{record['tokens_per_s']:,.0f}")
                progress.update(task, completed=step)
                if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps:
                    trainer_state = {"samples_seen": samples_seen, "global_batch": global_batch, "stage": stage,
                                     "num_processes": acc.num_processes, "scheduler": scheduler.state_dict(),
                                     "config": cfg.model_dump(),
                                     "hooks": {h.name: h.state_dict() for h in hooks}}  # fmt: skip
                    last_ckpt = save_checkpoint(acc, output_dir, step, model, optimizer, trainer_state,
                                                cfg.keep_checkpoints)  # fmt: skip
    finally:
        metrics.close()
    return TrainResult(step=cfg.steps, last_checkpoint=last_ckpt, metrics_path=metrics.path)
