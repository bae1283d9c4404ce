"""`aetheris report`: the command-line side (loading tokenizers, messages)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import typer

from aetheris.errors import BadValueError, UserError
from aetheris.report.build import build_report

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def _teacher_tokenizer(teacher_file: Path) -> str | None:
    """The teacher's model name when its tokenizer is on this machine: an embedded teacher, a
    .gguf file, or a folder holding a tokenizer (hub ids are not fetched for a default)."""
    from aetheris.teacher.load import resolve_model

    try:
        model = json.loads(teacher_file.read_text(encoding="utf-8")).get("model", "")
        ref = resolve_model(model)
    except (OSError, json.JSONDecodeError, AttributeError, UserError):
        return None  # build_report will report a bad file properly
    if ref.kind == "hub" or (ref.kind == "folder" and not any((ref.path / f).exists() for f in TOKENIZER_FILES)):
        return None
    return model


def _load_tokenizers(names: Sequence[str]) -> dict:
    """{display name: tokenizer}; each name is a model name as every command takes it."""
    if not names:
        return {}
    from transformers import AutoTokenizer  # lazy: slow import, only needed for fertility

    from aetheris.teacher.load import display_name, model_location

    tokenizers = {}
    for name in names:
        where = model_location(name)
        try:
            tokenizers[display_name(name)] = AutoTokenizer.from_pretrained(where)
        except (OSError, ValueError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BadValueError(f"--tokenizer {name}: no tokenizer could be loaded ({reason})") from None
    return tokenizers


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
        raise BadValueError(f"--level {level!r}: expected 'family' or 'group'")
    names = list(tokenizer)
    if not names:
        found = _teacher_tokenizer(teacher or results[0])
        names = [found] if found else []
    tokenizers = _load_tokenizers(names)
    try:
        data = build_report(results, out, teacher=teacher, level=level, tokenizers=tokenizers,
                            data_dir=data_dir, n_boot=n_boot, n_perm=n_perm, seed=seed)
    except (ValueError, FileNotFoundError) as e:  # unreadable or mismatched results files
        raise UserError(str(e)) from None
    typer.echo(f"teacher {data.teacher}; students {', '.join(data.students)}")
    for name in ("report.md", "report.html", "results.json"):
        typer.echo(str(out / name))
