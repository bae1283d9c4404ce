"""Hub datasets whose languages are subsets or a field, streamed per language through `datasets`.

Multilingual corpora on the Hugging Face hub name their languages in their own codes: FineWeb-2
has one subset per language (`swh_Latn`, `cmn_Hani`, ...), FLORES+ one per language too and a
language in each row (`iso_639_3` + `iso_15924`). A `HubSource` says which registry languages to
read, what the dataset calls each of them (the FLORES-200 code unless `codes` says otherwise),
where the language is (the subset, or a field of each row) and how many rows to stream per
language. The same code reads a hub id or a local folder of the same layout (a README.md whose
YAML `configs:` declares the subsets), which is how the tests run it without network.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from aetheris.data.sources import Example, LoadSummary, check_spec, parse_row
from aetheris.languages import UnknownLanguageError, get, tiny_aya

log = logging.getLogger(__name__)

CODE = "{code}"  # the placeholder a per-language subset name is formed with
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _placeholders(template: str) -> list[str] | None:
    """The {names} in a str.format template, or None when its braces do not parse."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError:
        return None


def _canonical(code: str) -> str:
    try:
        return get(code).code
    except UnknownLanguageError as exc:
        raise ValueError(str(exc)) from None


class HubSource(BaseModel):
    """One hub dataset (or a local folder of the same layout), read language by language."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hub: str = Field(description="dataset id (owner/name) or a local folder with the same layout")
    languages: Literal["tiny-aya"] | list[str] = Field(
        "tiny-aya", description="'tiny-aya' (all 70) or registry codes (ISO 639-1/-3 or FLORES-200)"
    )
    codes: dict[str, str | None] = Field(
        default_factory=dict,
        description="registry code -> the dataset's code for it (default: its FLORES-200 code); null = not in it",
    )
    subset: str | None = Field(
        CODE, description="'{code}': one subset per language; a name (or null: the default) holding all of them"
    )
    split: str = "train"
    text_field: str = "text"
    language_field: str | None = Field(
        None,
        description="field (or template such as '{iso_639_3}_{iso_15924}') naming each row's language; "
        "null = the subset's language",
    )
    rows_per_language: int = Field(gt=0, description="rows kept per language: the first ones streamed")
    shuffle_buffer: int = Field(0, ge=0, description="0 = file order; else shards and rows shuffled by seed")
    seed: int = 0
    revision: str | None = Field(None, description="hub commit, tag or branch (null = main)")

    @field_validator("hub")
    @classmethod
    def _hub_form(cls, v: str) -> str:
        local = v.startswith(("/", "./", "../", "~"))
        if not local and not _HUB_ID.match(v):
            raise ValueError(f"expected a hub dataset id 'owner/name' or a local folder (starting with /, ./, "
                             f"../ or ~), got {v!r}")  # fmt: skip
        return v

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, str):
            return v
        if not v:
            raise ValueError("expected 'tiny-aya' or a non-empty list of language codes")
        return list(dict.fromkeys(_canonical(code) for code in v))

    @field_validator("codes")
    @classmethod
    def _known_code_keys(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        return {_canonical(lang): code for lang, code in v.items()}

    @field_validator("subset")
    @classmethod
    def _subset_form(cls, v: str | None) -> str | None:
        names = None if v is None else _placeholders(v)
        if v is not None and (names is None or set(names) - {"code"}):
            raise ValueError(f"a subset may name only the placeholder {CODE}, got {v!r}")
        return v

    @field_validator("text_field")
    @classmethod
    def _text_field_form(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("expected the name of the field that holds the text")
        return v

    @field_validator("language_field")
    @classmethod
    def _language_field_form(cls, v: str | None) -> str | None:
        names = None if v is None else _placeholders(v)
        if v is not None and ("{" in v or "}" in v) and not (names and all(names)):
            raise ValueError(f"expected a field name or a template of {{field}} names, got {v!r}")
        return v

    @model_validator(mode="after")
    def _every_language_has_a_code(self) -> HubSource:
        if not self.per_language_subsets and self.language_field is None:
            raise ValueError(f"language_field is required when subset is not per-language ({CODE!r}): "
                             "the rows must say their language")  # fmt: skip
        for lang in self.selected():
            if lang not in self.codes and get(lang).flores is None:
                raise ValueError(f"codes.{lang}: {lang} has no FLORES-200 code; name the dataset's code for it "
                                 "(or null if the dataset has none)")  # fmt: skip
        return self

    @property
    def per_language_subsets(self) -> bool:
        return self.subset is not None and CODE in self.subset

    def selected(self) -> list[str]:
        """Canonical codes of the languages asked for (before dropping those the dataset lacks)."""
        if self.languages == "tiny-aya":
            return [lang.code for lang in tiny_aya()]
        return list(self.languages)

    def dataset_codes(self) -> dict[str, str]:
        """Registry code -> the dataset's code, for every selected language the dataset has."""
        out = {}
        for lang in self.selected():
            code = self.codes[lang] if lang in self.codes else get(lang).flores
            if code is not None:
                out[lang] = code
        return out


def _source_kind(value: Any) -> str:
    return "source[hub]" if isinstance(value, dict | HubSource) else "source[path]"


# What a run config's data.train / data.eval lists hold: a string (file, folder, hf:<id>,
# embedded) or a mapping (a HubSource). The tags hold "[" so that config errors, which drop
# union-member names from the key path, show only the keys.
DataSource = Annotated[
    Annotated[HubSource, Tag("source[hub]")]
    | Annotated[Annotated[str, AfterValidator(check_spec)], Tag("source[path]")],
    Discriminator(_source_kind),
]


def _row_language(row: dict[str, Any], field: str, from_dataset: dict[str, str]) -> str | None:
    """The registry code a row's language field names, or None when it names none we know."""
    try:
        value = field.format_map(row) if "{" in field else row[field]
    except (KeyError, IndexError, ValueError):
        return None
    if not isinstance(value, str):
        return None
    if value in from_dataset:
        return from_dataset[value]
    try:
        return get(value).code
    except UnknownLanguageError:
        return None


def _stream(source: HubSource, subset: str | None) -> Iterable[dict[str, Any]]:
    from datasets import load_dataset

    try:
        rows = load_dataset(source.hub, subset, split=source.split, streaming=True, revision=source.revision)
    except ValueError as exc:  # an unknown subset or split: say which key to change
        detail = str(exc) if len(str(exc)) <= 300 else str(exc)[:300] + " ..."  # it may list 1,000+ subsets
        raise ValueError(f"{source.hub}: cannot read subset {subset!r}, split {source.split!r} ({detail}); "
                         "set the source's codes/subset/split to what the dataset has") from None  # fmt: skip
    if source.shuffle_buffer:
        rows = rows.shuffle(seed=source.seed, buffer_size=source.shuffle_buffer)
    return rows


def _examples(rows: Iterable[dict[str, Any]], source: HubSource, where: str, want: dict[str, int],
              subset_lang: str | None, summary: LoadSummary) -> Iterator[Example]:
    """Rows as examples until every wanted language has its count (`want` is decremented)."""
    from_dataset = {code: lang for lang, code in source.dataset_codes().items()}
    for n, row in enumerate(rows, start=1):
        at = f"{where}:row {n}"
        lang = subset_lang
        if source.language_field is not None:
            named = _row_language(row, source.language_field, from_dataset)
            if named is None or (subset_lang is not None and named != subset_lang):
                summary.skip("language_mismatch" if named else "unknown_language", at)
                continue
            lang = named
        if want.get(lang, 0) <= 0:
            continue  # a language not asked for, or one already full
        example = parse_row({"lang": lang, "text": row.get(source.text_field)}, summary, at)
        if example is None:
            continue
        want[lang] -= 1
        yield example
        if not any(want.values()):
            return


def read_hub(source: HubSource, summary: LoadSummary | None = None) -> Iterator[Example]:
    """Up to `rows_per_language` text examples per selected language, streamed in order."""
    summary = summary if summary is not None else LoadSummary()
    codes = source.dataset_codes()
    missing = sorted(set(source.selected()) - set(codes))
    if missing:
        log.info("%s: not read for %s (codes: null)", source.hub, ", ".join(missing))
    left = dict.fromkeys(codes, source.rows_per_language)  # rows still wanted, per language
    if source.per_language_subsets:
        for lang, code in codes.items():
            subset = source.subset.replace(CODE, code)
            where = f"{source.hub}/{subset}[{source.split}]"
            one = {lang: left[lang]}
            yield from _examples(_stream(source, subset), source, where, one, lang, summary)
            left[lang] = one[lang]
    else:
        where = f"{source.hub}/{source.subset or 'default'}[{source.split}]"
        yield from _examples(_stream(source, source.subset), source, where, left, None, summary)
    short = {lang: source.rows_per_language - n for lang, n in left.items() if n > 0}
    if short:
        log.warning("%s [%s]: fewer rows than rows_per_language=%d for %s", source.hub, source.split,
                    source.rows_per_language, ", ".join(f"{lang} ({n} read)" for lang, n in short.items()))
