"""The one interface every evaluation task implements, and what tasks share."""

from __future__ import annotations

import csv
import difflib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from aetheris.errors import MissingPathError, UserError

Item = dict[str, Any]


class Task(Protocol):
    """An evaluation task: a metric over items, one list of items per language."""

    name: str
    metric: str
    higher_is_better: bool
    version: str  # bump when prompts or scoring change: cached item results are keyed by it

    def languages(self) -> list[str]:
        """Canonical language codes (the registry's) this task covers."""
        ...

    def load(self, lang: str, data_dir: Path | None, limit: int | None) -> list[Item]:
        """Items of one language, each a dict with a unique string ``id``; hub when no data_dir."""
        ...

    def score(self, lm: Any, items: Sequence[Item]) -> list[Item]:
        """One result per item: ``{"id", "score", ...}`` (``bits``/``bytes`` for bpb tasks)."""
        ...


class DatasetLanguages:
    """For tasks whose languages are a map ``codes`` = {canonical code: the dataset's code}."""

    codes: dict[str, str]

    def languages(self) -> list[str]:
        return list(self.codes)

    def dataset_codes(self) -> dict[str, str]:
        """Lets a user also type the dataset's own code (e.g. 'zh' for 'zh-Hans')."""
        return dict(self.codes)


class UnknownLanguageError(UserError, ValueError):
    pass


def resolve_language(code: str, langs: dict[str, str]) -> str:
    """Canonical code for ``code`` given ``{canonical: dataset code}``; accepts either, any case."""
    # "zh" names "zh-Hans" when a task has a single Chinese variety.
    bases: dict[str, list[str]] = {}
    for k in langs:
        bases.setdefault(k.split("-")[0].lower(), []).append(k)
    lookup = {b: ks[0] for b, ks in bases.items() if len(ks) == 1}
    lookup |= {k.lower(): k for k in langs} | {v.lower(): k for k, v in langs.items() if v}
    key = code.strip().lower()
    if key in lookup:
        return lookup[key]
    from aetheris import languages  # the registry knows every form of a code ("zh" -> zh-Hans)

    try:
        canonical = languages.get(code).code
    except languages.UnknownLanguageError:
        canonical = None
    if canonical in langs:
        return canonical
    close = difflib.get_close_matches(key, list(lookup), n=5, cutoff=0.5)
    hint = f"; close matches: {', '.join(lookup[c] for c in close)}" if close else ""
    raise UnknownLanguageError(f"unknown language {code!r}; expected one of {', '.join(sorted(langs))}{hint}")


def missing_file(path: Path, what: str, hub_id: str) -> MissingPathError:
    return MissingPathError(
        f"{what}: expected file {path} (the original layout, see shared/data/README.md); "
        f"or omit --data-dir to download the Hugging Face dataset {hub_id!r}"
    )


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e})") from e
    return rows


def read_tsv(path: Path, header: bool) -> list[list[str]]:
    """Tab-separated rows read with QUOTE_NONE (the texts contain quote characters)."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[1:] if header else rows


def load_hub(hub_id: str, name: str | None, split: str):
    """A split of a hub dataset (needs network and the ``datasets`` package)."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError(
            f"loading {hub_id!r} from the hub needs the 'datasets' package; "
            "install it or pass --data-dir with the original files"
        ) from e
    return datasets.load_dataset(hub_id, name, split=split)


def take(rows: list, limit: int | None) -> list:
    return rows if limit is None else rows[: max(0, limit)]
