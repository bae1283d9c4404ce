"""`aetheris report`: the command-line side (loading tokenizers, messages)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import typer

from aetheris.report.build import build_report

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def _teacher_tokenizer_dir(teacher_file: Path) -> str | None:
    """The teacher's model folder when it is a local directory holding a tokenizer."""
    try:
        model = json.loads(teacher_file.read_text(encoding="utf-8")).get("model", "")
    except (OSError, json.JSONDecodeError):
        return None  # build_report will report the bad file properly
    path = Path(model)
    if path.is_dir() and any((path / f).exists() for f in TOKENIZER_FILES):
        return str(path)
    return None


def run_report(
    results: Sequence[Path],
    out: Path,
    *,
    teacher: Path | None,
    level: str,
    tokenizer: Sequence[str],
    data_dir: Path | None,
    n_boot: int,
    n_perm: int,
    seed: int,
) -> None:
    if level not in ("family", "group"):
        raise typer.BadParameter(f"--level must be 'family' or 'group', not {level!r}")
    names = list(tokenizer)
    if not names:
        found = _teacher_tokenizer_dir(teacher or results[0])
        names = [found] if found else []
    tokenizers = {}
    if names:
        from transformers import AutoTokenizer  # lazy: slow import, only needed for fertility

        tokenizers = {Path(n).name or n: AutoTokenizer.from_pretrained(n) for n in names}
    try:
        data = build_report(results, out, teacher=teacher, level=level, tokenizers=tokenizers,
                            data_dir=data_dir, n_boot=n_boot, n_perm=n_perm, seed=seed)
    except (ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"teacher {data.teacher}; students {', '.join(data.students)}")
    for name in ("report.md", "report.html", "results.json"):
        typer.echo(str(out / name))
