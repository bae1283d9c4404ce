"""The language registry: every language Tiny Aya covers, plus the XCOPA, MGSM and SIB-200 varieties.

Data lives in data/languages.json (generated once by scripts/make_languages.py, then committed; the
JSON is the source of truth). Sources, also named in the JSON's `sources` block:
- coverage and regions: the Tiny Aya model card (70 languages, five regions);
- codes: ISO 639-3 code tables (ISO 639-1/-3, macro-languages), FLORES-200 README (variety codes);
- family and group: Glottolog (top-level families) and WALS genera (finer groups);
- tier: Joshi et al. 2020, "The State and Fate of Linguistic Diversity and Inclusion in the NLP
  World", classes 0-5 (lang2tax.txt).

`get` accepts the canonical code, ISO 639-1, ISO 639-3, FLORES code or a listed alias, in any case
("zh" and "zho" resolve to zh-Hans, as XCOPA and MGSM mean Simplified Mandarin).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from aetheris.errors import UserError

Region = Literal["Europe", "Asia-Pacific", "Africa", "South Asia", "West Asia", "Other"]
REGIONS: tuple[str, ...] = get_args(Region)  # Tiny Aya's five, then everything else
_DATA_FILE = "data/languages.json"


@dataclass(frozen=True)
class Language:
    code: str  # canonical key: ISO 639-1 where it exists ("sw", "zh-Hans"), else ISO 639-3 ("pcm")
    iso639_1: str | None
    iso639_3: str
    flores: str | None  # FLORES-200 code, e.g. "swh_Latn"
    name: str
    family: str  # top-level family, e.g. "Niger-Congo"
    group: str  # genus / sub-family, e.g. "Bantu"
    script: str  # ISO 15924, e.g. "Latn"
    region: str  # Tiny Aya region, or "Other"
    tier: int  # Joshi et al. 2020 class, 0 (lowest) .. 5 (highest)
    tiny_aya: bool  # covered by Tiny Aya


class UnknownLanguageError(UserError, KeyError):
    """No language has this code; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class AmbiguousLanguageError(UnknownLanguageError):
    """The code names several entries (e.g. one language in two scripts) and no alias picks one."""


class _Entry(BaseModel):
    """One row of languages.json, validated so a bad edit fails with the field's name."""

    model_config = ConfigDict(extra="forbid")

    code: str
    iso639_1: str | None
    iso639_3: str
    flores: str | None
    name: str
    family: str
    group: str
    script: str
    region: Region
    tier: int
    tiny_aya: bool
    aliases: list[str] = []
    note: str | None = None

    @field_validator("tier")
    @classmethod
    def _tier_range(cls, tier: int) -> int:
        if not 0 <= tier <= 5:
            raise ValueError(f"tier must be 0..5 (Joshi et al. 2020 classes), got {tier}")
        return tier


def _norm(code: str) -> str:
    # Case-insensitive, and "zh_Hans" == "zh-Hans" so users need not remember which separator.
    return code.strip().lower().replace("_", "-")


@dataclass(frozen=True)
class _Registry:
    languages: tuple[Language, ...]
    # Lookup layers, tried in order; each maps a normalised code to the canonical codes it names.
    layers: tuple[dict[str, list[str]], ...]
    by_code: dict[str, Language]
    names: dict[str, str]  # lowercased name -> canonical code, for suggestions


@cache
def _registry() -> _Registry:
    path = resources.files("aetheris").joinpath(_DATA_FILE)
    return _parse(json.loads(path.read_text(encoding="utf-8")), str(path))


def _parse(raw: object, path: str) -> _Registry:
    """Validate the JSON document and build the lookup tables; errors name the file and entry."""
    if not isinstance(raw, dict) or not isinstance(raw.get("languages"), list):
        raise ValueError(f"{path}: expected an object with a 'languages' list")
    entries = []
    for i, row in enumerate(raw["languages"]):
        try:
            entries.append(_Entry.model_validate(row))
        except ValidationError as err:
            code = row.get("code", "?") if isinstance(row, dict) else "?"
            raise ValueError(f"{path}: languages[{i}] ({code!r}) is invalid: {err}") from err

    fields = Language.__dataclass_fields__
    languages = tuple(Language(**{k: getattr(e, k) for k in fields}) for e in entries)
    by_code: dict[str, Language] = {}
    for lang in languages:
        if _norm(lang.code) in by_code:
            raise ValueError(f"{path}: duplicate code {lang.code!r}")
        by_code[_norm(lang.code)] = lang

    def layer(keys_of) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for e in entries:
            for key in keys_of(e):
                if key:
                    out.setdefault(_norm(key), []).append(e.code)
        return out

    canonical = layer(lambda e: [e.code])
    flores = layer(lambda e: [e.flores])
    aliases = layer(lambda e: e.aliases)
    for key, codes in (flores | aliases).items():
        if len(codes) > 1:
            raise ValueError(f"{path}: {key!r} is the FLORES code or alias of several entries: {codes}")
    layers = (canonical, flores, aliases, layer(lambda e: [e.iso639_1]), layer(lambda e: [e.iso639_3]))
    names = {lang.name.lower(): lang.code for lang in languages}
    return _Registry(languages, layers, by_code, names)


def get(code: str) -> Language:
    """The language for a canonical, ISO 639-1, ISO 639-3 or FLORES code (case-insensitive)."""
    reg = _registry()
    key = _norm(code)
    for layer in reg.layers:
        hits = layer.get(key)
        if hits and len(hits) == 1:
            return reg.by_code[_norm(hits[0])]
        if hits:
            raise AmbiguousLanguageError(
                f"language code {code!r} is ambiguous: it names {', '.join(hits)}; use one of those"
            )
    raise UnknownLanguageError(f"unknown language code {code!r}; close matches: {_suggest(code, reg)}")


def _suggest(code: str, reg: _Registry) -> str:
    keys: dict[str, str] = {}  # candidate spelling -> canonical code
    for layer in reg.layers:
        for key, codes in layer.items():
            keys.setdefault(key, codes[0])
    keys.update(reg.names)
    close = difflib.get_close_matches(_norm(code), keys, n=6, cutoff=0.6)
    if not close:
        return "none (see aetheris.languages.all_languages())"
    seen: dict[str, None] = {}
    for key in close:
        seen.setdefault(keys[key], None)
    return ", ".join(f"{c} ({reg.by_code[_norm(c)].name})" for c in seen)


def all_languages() -> list[Language]:
    """Every entry: Tiny Aya's 70, XCOPA's extra languages, and every SIB-200 variety."""
    return list(_registry().languages)


def tiny_aya() -> list[Language]:
    """The 70 languages Tiny Aya covers."""
    return [lang for lang in _registry().languages if lang.tiny_aya]


def print_table(tiny_aya_only: bool = False) -> None:
    """Print the language registry (code, FLORES, name, family/group, script, region, tier)."""
    from rich.console import Console
    from rich.table import Table

    langs = tiny_aya() if tiny_aya_only else all_languages()
    table = Table(title=f"{len(langs)} languages (tier: Joshi et al. 2020 class)")
    for column in ("code", "flores", "name", "family", "group", "script", "region", "tier", "tiny_aya"):
        table.add_column(column)
    for lang in sorted(langs, key=lambda x: (REGIONS.index(x.region), x.family, x.group, x.code)):
        table.add_row(lang.code, lang.flores or "-", lang.name, lang.family, lang.group, lang.script,
                      lang.region, str(lang.tier), "yes" if lang.tiny_aya else "")
    Console().print(table)
