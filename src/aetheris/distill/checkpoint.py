"""Training checkpoints: written atomically, read back with nothing but safetensors, JSON and
`torch.load(weights_only=True)`.

Checkpoint folder `checkpoints/step-NNNNNNNN/` (written as a temp folder, then renamed):
  model.safetensors        full state dict; tied weights stored once (aliases in the header)
  optimizer-rankR.pt       torch.save of the optimizer's state dict (plain tensors and numbers)
  rng-rankR.pt             python / numpy / torch (/ cuda) RNG states as plain tensors and numbers
  trainer_state.json       step, samples seen, scheduler state, config
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from safetensors import safe_open
from safetensors.torch import save_file

CKPT_RE = re.compile(r"^step-(\d{8})$")


def save_model_state(state: dict[str, torch.Tensor], path: Path) -> None:
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


def rng_state() -> dict[str, Any]:
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


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _complete(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("step-*") if CKPT_RE.match(p.name)) if root.exists() else []


def find_last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (temp folders of an interrupted save are ignored)."""
    done = _complete(Path(output_dir) / "checkpoints")
    return done[-1] if done else None


def save_checkpoint(acc: Accelerator, output_dir: Path, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, trainer_state: dict[str, Any], keep: int) -> Path:  # fmt: skip
    """Every rank calls this (the model state is gathered collectively); the main process writes
    the shared files and renames the folder into place, then prunes all but the newest `keep`."""
    root = output_dir / "checkpoints"
    final, tmp = root / f"step-{step:08d}", root / f".tmp-step-{step:08d}"
    main, rank = acc.is_main_process, acc.process_index
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    model_state = acc.get_state_dict(model)  # gathers FSDP shards; a collective, every rank calls it
    if main:
        save_model_state(model_state, tmp / "model.safetensors")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **trainer_state}, indent=2))
    torch.save(optimizer.state_dict(), tmp / f"optimizer-rank{rank}.pt")
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    acc.wait_for_everyone()
    if main:
        os.replace(tmp, final)  # a killed save leaves only a .tmp folder, never a half checkpoint
        for old in _complete(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def read_trainer_state(ckpt: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load the checkpoint's weights into `model` (before accelerate wraps it); its trainer state."""
    model.load_state_dict(load_model_state(ckpt / "model.safetensors"))
    return json.loads((ckpt / "trainer_state.json").read_text())


def restore_optimizer(ckpt: Path, state: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler: Any,
                      rank: int, world: int) -> None:  # fmt: skip
    """Optimizer, scheduler and RNG state of this rank; refuses another process count."""
    if state.get("num_processes", 1) != world:
        raise ValueError(
            f"{ckpt}: saved by {state.get('num_processes', 1)} process(es), this run has {world}: "
            "resume with the same number of processes (optimizer and RNG state are per process)"
        )
    optimizer.load_state_dict(torch.load(ckpt / f"optimizer-rank{rank}.pt", weights_only=True))
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(torch.load(ckpt / f"rng-rank{rank}.pt", weights_only=True))
