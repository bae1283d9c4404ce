"""`aetheris merge MERGE.yaml -o DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def merge_cmd(
    config: Annotated[Path, typer.Argument(help="Merge config (YAML), e.g. configs/merge-region.yaml.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output model folder (replaced if it exists).")],
) -> None:
    """Merge model folders (students or teachers): linear, task_arithmetic, slerp, ties, dare_ties."""
    from aetheris.merge import load_merge_config, merge

    cfg = load_merge_config(config)  # every key checked before any model is read
    folder = merge(cfg, out, source=str(config))
    inputs = ([cfg.base] if cfg.base else []) + [m.model for m in cfg.models]
    typer.echo(f"{folder}: {cfg.method} of {', '.join(inputs)}")
