"""Tokenizer fertility on FLORES: tokens per character and bytes per token, per language and script.

FLORES sentences are parallel (the same 1,004 sentences in every language, via SIB-200), so a
language that needs more tokens per character pays more compute and context for the same
content; this is one suspected cause of unequal degradation. Several tokenizers can be measured
side by side.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from aetheris.errors import MissingPathError
from aetheris.paths import shared_data_dir
from aetheris.progress import Bar

SPLITS = ("train", "dev", "test")


class Tokenizer(Protocol):
    """What is needed of a tokenizer: Hugging Face tokenizers satisfy this."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


class LanguageFertility(BaseModel):
    tokenizer: str
    language: str  # the label asked for (a registry code or the FLORES code)
    flores: str
    script: str
    sentences: int
    chars: int
    bytes: int  # UTF-8
    tokens: int
    tokens_per_char: float
    bytes_per_token: float


class ScriptFertility(BaseModel):
    tokenizer: str
    script: str
    languages: list[str]
    tokens_per_char: float  # mean over the script's languages (each language weighs the same)
    bytes_per_token: float


def flores_sentences(
    flores_code: str, data_dir: str | Path | None = None, splits: Sequence[str] = SPLITS
) -> list[str]:
    """The SIB-200 FLORES sentences of one language, ordered by `index_id` (parallel order)."""
    root = Path(data_dir) if data_dir is not None else shared_data_dir()
    folder = root / "flores_sib200" / "annotated" / flores_code
    if not folder.is_dir():
        raise MissingPathError(
            f"no SIB-200 folder for FLORES code {flores_code!r}: {folder} "
            "(set AETHERIS_DATA_DIR to the folder holding flores_sib200/)"
        )
    rows: list[tuple[int, str]] = []
    for split in splits:
        path = folder / f"{split}.tsv"
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if reader.fieldnames is None or not {"index_id", "text"} <= set(reader.fieldnames):
                raise ValueError(f"{path}: expected columns index_id, text; got {reader.fieldnames}")
            rows.extend((int(r["index_id"]), r["text"]) for r in reader)
    return [text for _, text in sorted(rows)]


def script_of(flores_code: str) -> str:
    """ISO 15924 script from a FLORES code: 'swh_Latn' -> 'Latn'."""
    _, sep, script = flores_code.partition("_")
    if not sep or not script:
        raise ValueError(f"not a FLORES code (lang_Script): {flores_code!r}")
    return script


def measure(
    tokenizers: Mapping[str, Tokenizer],
    languages: Mapping[str, str] | Sequence[str],
    data_dir: str | Path | None = None,
    splits: Sequence[str] = SPLITS,
) -> list[LanguageFertility]:
    """Fertility of each tokenizer on each language.

    `languages`: FLORES codes, or a mapping label -> FLORES code (e.g. {"sw": "swh_Latn"}).
    Special tokens are not counted: they cost the same in every language.
    """
    pairs = dict(languages) if isinstance(languages, Mapping) else {code: code for code in languages}
    out: list[LanguageFertility] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    # stderr keeps stdout clean for whoever reads the command's output
    with Bar(*columns, console=Console(stderr=True), transient=True) as progress:
        bar = progress.add_task("tokenizer fertility", total=len(pairs) * len(tokenizers))
        for label, code in pairs.items():
            sentences = flores_sentences(code, data_dir, splits)
            chars = sum(len(s) for s in sentences)
            nbytes = sum(len(s.encode("utf-8")) for s in sentences)
            for name, tok in tokenizers.items():
                tokens = sum(len(tok.encode(s, add_special_tokens=False)) for s in sentences)
                out.append(LanguageFertility(
                    tokenizer=name, language=label, flores=code, script=script_of(code),
                    sentences=len(sentences), chars=chars, bytes=nbytes, tokens=tokens,
                    tokens_per_char=tokens / chars, bytes_per_token=nbytes / tokens,
                ))
                progress.advance(bar)
    return out


def by_script(rows: Sequence[LanguageFertility]) -> list[ScriptFertility]:
    """Mean fertility per (tokenizer, script), each language counted once."""
    groups: dict[tuple[str, str], list[LanguageFertility]] = {}
    for r in rows:
        groups.setdefault((r.tokenizer, r.script), []).append(r)
    return [
        ScriptFertility(
            tokenizer=tok, script=script, languages=[r.language for r in members],
            tokens_per_char=sum(r.tokens_per_char for r in members) / len(members),
            bytes_per_token=sum(r.bytes_per_token for r in members) / len(members),
        )
        for (tok, script), members in sorted(groups.items())
    ]


def tokens_per_char(rows: Sequence[LanguageFertility], tokenizer: str) -> dict[str, float]:
    """language -> tokens per character for one tokenizer (the input of equity's Spearman)."""
    return {r.language: r.tokens_per_char for r in rows if r.tokenizer == tokenizer}
