"""What the training loop reports: metrics.jsonl (+ TensorBoard when installed) and a progress bar."""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from aetheris.progress import Bar

_TB_WARNED = False


def _step_of(line: str) -> float:
    """A metrics line's step; a line torn by a kill mid-write counts as past the checkpoint."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def scalar(v: Any) -> float | None:
    """A step_fn output as a float metric, or None when it is not a scalar."""
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return float(v.detach().float())
    return float(v) if isinstance(v, int | float) else None


class MetricsLog:
    """JSONL always; TensorBoard when the package is installed (warns once otherwise).

    `keep_until`: the step of the checkpoint a resumed run continues from (lines after it are
    redone, so they are dropped); None starts a fresh file. Only the main process logs."""

    def __init__(self, output_dir: Path, keep_until: int | None, enabled: bool) -> None:
        self.path = output_dir / "metrics.jsonl"
        self.enabled, self.tb = enabled, None
        if not enabled:
            return
        if keep_until is not None and self.path.exists():
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


class Throughput:
    """Tokens per second since the last logged step."""

    def __init__(self) -> None:
        self.tokens, self.since = 0, time.perf_counter()

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def take(self) -> float:
        """The rate since the last call, and start counting afresh."""
        now = time.perf_counter()
        rate = self.tokens / max(now - self.since, 1e-9)
        self.tokens, self.since = 0, now
        return rate


def progress_bar(stage: str, enabled: bool) -> Bar:
    columns = (
        TextColumn(f"[bold]{stage}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    )  # fmt: skip
    return Bar(*columns, disable=not enabled)
