"""Read training examples from JSONL, Parquet or Hugging Face `datasets`, skipping bad rows.

Every row holds `lang` and either `text` (plain prose, for distillation) or `messages` (a chat, for
SFT; optionally `tools`). A malformed row is never fatal: it is skipped and counted by reason in a
`LoadSummary`, which the caller prints at the end of a run so silent data loss is visible.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aetheris.errors import BadValueError, MissingPathError
from aetheris.languages import UnknownLanguageError, get

if TYPE_CHECKING:
    from aetheris.data.hub import HubSource

_ROLES = {"system", "user", "assistant", "tool"}


@dataclass(frozen=True)
class Example:
    """One training example: plain `text`, or a chat in `messages` (with optional `tools`)."""

    lang: str  # canonical registry code
    text: str | None = None
    messages: tuple[dict[str, Any], ...] | None = None
    tools: tuple[dict[str, Any], ...] | None = None


@dataclass
class LoadSummary:
    """Kept rows per language and skipped rows per reason, over every source read with it."""

    kept: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    examples_of_skips: dict[str, str] = field(default_factory=dict)  # reason -> first "source:row"

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.examples_of_skips.setdefault(reason, where)

    @property
    def n_kept(self) -> int:
        return sum(self.kept.values())

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        return {"kept": dict(self.kept), "skipped": dict(self.skipped),
                "first_skipped_at": dict(self.examples_of_skips)}

    def __str__(self) -> str:
        lines = [f"data: kept {self.n_kept} rows in {len(self.kept)} languages, skipped {self.n_skipped}"]
        for reason, n in self.skipped.most_common():
            lines.append(f"  skipped {n} x {reason} (first at {self.examples_of_skips[reason]})")
        return "\n".join(lines)

    def report(self) -> None:
        """Print the summary (rich console, stderr) — call at the end of a run."""
        from rich.console import Console

        Console(stderr=True).print(str(self), markup=False, highlight=False)


def parse_row(row: object, summary: LoadSummary, where: str) -> Example | None:
    """Validate one decoded row; returns None (and counts the reason) when it is malformed."""
    if not isinstance(row, Mapping):
        summary.skip("not_an_object", where)
        return None
    raw_lang = row.get("lang")
    if not isinstance(raw_lang, str) or not raw_lang.strip():
        summary.skip("missing_lang", where)
        return None
    try:
        lang = get(raw_lang).code
    except UnknownLanguageError:  # also covers ambiguous codes
        summary.skip("unknown_language", where)
        return None

    text, messages = row.get("text"), row.get("messages")
    if text is not None:
        if not isinstance(text, str):
            summary.skip("text_not_a_string", where)
            return None
        if not text.strip():
            summary.skip("empty_text", where)
            return None
        example = Example(lang=lang, text=text)
    elif messages is not None:
        if not _valid_messages(messages):
            summary.skip("bad_messages", where)
            return None
        tools = row.get("tools")
        if tools is not None and not (isinstance(tools, list) and all(isinstance(t, Mapping) for t in tools)):
            summary.skip("bad_tools", where)
            return None
        example = Example(lang=lang, messages=tuple(dict(m) for m in messages),
                          tools=tuple(dict(t) for t in tools) if tools else None)
    else:
        summary.skip("missing_text_and_messages", where)
        return None
    summary.kept[lang] += 1
    return example


def _valid_messages(messages: object) -> bool:
    # A chat must be a non-empty list of {role, content} with at least one assistant turn to learn from.
    if not isinstance(messages, list) or not messages:
        return False
    for m in messages:
        if not isinstance(m, Mapping) or m.get("role") not in _ROLES:
            return False
        content = m.get("content")
        has_calls = m.get("role") == "assistant" and bool(m.get("tool_calls"))
        if not has_calls and not (isinstance(content, str) and content.strip()):
            return False
    return any(m["role"] == "assistant" for m in messages)


def read_jsonl(path: str | Path, summary: LoadSummary | None = None) -> Iterator[Example]:
    """Examples from a JSON Lines file; bad lines (bytes, JSON, fields) are counted, not raised."""
    summary = summary if summary is not None else LoadSummary()
    path = Path(path)
    with path.open("rb") as f:  # bytes, so one undecodable line does not abort the file
        for n, raw in enumerate(f, start=1):
            where = f"{path}:{n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                summary.skip("undecodable_bytes", where)
                continue
            if not line.strip():
                continue  # blank lines are layout, not rows
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                summary.skip("invalid_json", where)
                continue
            example = parse_row(row, summary, where)
            if example is not None:
                yield example


def read_parquet(path: str | Path, summary: LoadSummary | None = None,
                 batch_size: int = 1024) -> Iterator[Example]:
    """Examples from a Parquet file (columns `lang` and `text` or `messages`), streamed in batches."""
    import pyarrow.parquet as pq

    summary = summary if summary is not None else LoadSummary()
    path = Path(path)
    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
        for row in batch.to_pylist():
            n += 1
            example = parse_row(row, summary, f"{path}:row {n}")
            if example is not None:
                yield example


def read_hf(dataset_id: str, split: str = "train", name: str | None = None,
            summary: LoadSummary | None = None, streaming: bool = True) -> Iterator[Example]:
    """Examples from a Hugging Face `datasets` id (needs the `datasets` package and network or cache)."""
    from datasets import load_dataset

    summary = summary if summary is not None else LoadSummary()
    dataset = load_dataset(dataset_id, name, split=split, streaming=streaming)
    for n, row in enumerate(dataset, start=1):
        example = parse_row(row, summary, f"hf:{dataset_id}[{split}]:row {n}")
        if example is not None:
            yield example


EMBEDDED = ("embedded", "embedded:text", "embedded:chat")
_SUFFIXES = (".jsonl", ".parquet")
_DATASET_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def check_spec(spec: str) -> str:
    """The spec if its form is one `read_source` (or `embedded`) reads; ValueError saying why not.

    Needs no network: only a spec that looks like a hub id is looked for on disk, because
    `owner/name` without `hf:` is read as a folder (the commonest slip in a run config).
    """
    if spec in EMBEDDED:
        return spec
    if spec.startswith("sib200:"):
        from aetheris.data.sib200 import TRAINABLE_SPLITS

        if spec[7:] not in TRAINABLE_SPLITS:
            raise ValueError(f"expected sib200:train or sib200:dev, got {spec!r} (the study scores SIB-200 test: "
                             "never train or calibrate on it)")  # fmt: skip
        return spec
    if spec.startswith("hf:"):
        dataset_id, _, split = spec[3:].partition(":")
        if not _DATASET_ID.match(dataset_id) or (split and not split.strip()):
            raise ValueError(f"expected hf:<dataset id>[:split], got {spec!r}")
        return spec
    prefix, sep, _ = spec.partition(":")
    if sep and "/" not in prefix and len(prefix) > 1:  # "C:" stays a Windows drive
        raise ValueError(f"unknown source prefix {prefix + ':'!r} in {spec!r}; expected hf:<dataset id>, "
                         "sib200:train, embedded, a .jsonl/.parquet file, a folder, or a mapping with hub:")  # fmt: skip
    path = Path(spec).expanduser()
    if path.suffix and path.suffix not in _SUFFIXES and not path.is_dir():
        raise ValueError(f"unsupported file type {path.suffix!r} in {spec!r}; expected .jsonl or .parquet")
    if not path.suffix and _DATASET_ID.match(spec) and "/" in spec and not path.exists():
        raise ValueError(f"{spec!r} is no local folder; a hub dataset is written hf:{spec} (rows with lang and "
                         "text) or as a mapping with hub: (per-language subsets, fields mapped)")  # fmt: skip
    return spec


def read_source(spec: str | Path | HubSource, summary: LoadSummary | None = None) -> Iterator[Example]:
    """Dispatch on the spec: a `HubSource`, `hf:<id>[:split]`, `sib200:<train|dev>` (shared/data's
    SIB-200 sentences), a .jsonl/.parquet file, or a folder."""
    summary = summary if summary is not None else LoadSummary()
    if not isinstance(spec, str | Path):
        from aetheris.data.hub import read_hub  # hub.py builds on this module

        yield from read_hub(spec, summary)
        return
    text = str(spec)
    if text.startswith("sib200:"):
        from aetheris.data.sib200 import sib200_examples  # that module builds on this one

        for example in sib200_examples(check_spec(text)[7:]):
            summary.kept[example.lang] += 1
            yield example
        return
    if text.startswith("hf:"):
        dataset_id, _, split = text[3:].partition(":")
        yield from read_hf(dataset_id, split or "train", summary=summary)
        return
    path = Path(spec)
    if not path.exists():
        raise MissingPathError(f"data source {path} does not exist (expected .jsonl, .parquet, a folder "
                                "or hf:<dataset id>)")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in {".jsonl", ".parquet"})
        if not files:
            raise MissingPathError(f"{path}: folder holds no .jsonl or .parquet files")
        for file in files:
            yield from read_source(file, summary)
    elif path.suffix == ".jsonl":
        yield from read_jsonl(path, summary)
    elif path.suffix == ".parquet":
        yield from read_parquet(path, summary)
    else:
        raise BadValueError(f"data source {path}: unsupported file type {path.suffix!r}; "
                         "expected .jsonl or .parquet")


def read_sources(specs: Iterable[str | Path | HubSource], summary: LoadSummary | None = None) -> list[Example]:
    """Every example of several sources, in order (one summary for all)."""
    summary = summary if summary is not None else LoadSummary()
    return [example for spec in specs for example in read_source(spec, summary)]


def _corpus_dir() -> Path:
    return Path(str(resources.files("aetheris").joinpath("data/corpus")))


def embedded_corpus(kind: str = "text", summary: LoadSummary | None = None) -> list[Example]:
    """The bundled sample corpus: `kind="text"` (prose in every Tiny Aya language) or `"chat"`."""
    if kind not in {"text", "chat"}:
        raise ValueError(f"embedded_corpus kind must be 'text' or 'chat', got {kind!r}")
    folder = _corpus_dir() / "chat" if kind == "chat" else _corpus_dir()
    summary = summary if summary is not None else LoadSummary()
    return [ex for path in sorted(folder.glob("*.jsonl")) for ex in read_jsonl(path, summary)]
