"""Language ID of replies with lingua (offline: the package ships its models).

Each Tiny Aya language maps to the lingua language of the same ISO 639-1 code, else of the same
ISO 639-3 code. Lingua lacks 14 of the 70 (see data/lid_lingua.json, kept in step by a test);
replies in those are not checked, and the row records that the check was skipped and why.
zh-Hans and zh-Hant share lingua's one CHINESE; Cantonese (yue) is not mapped to it, since
lingua cannot tell Cantonese from Mandarin and would pass a Mandarin reply to a Cantonese prompt.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import Any

from aetheris.languages import tiny_aya

# Macro-language codes lingua shares with a Tiny Aya variety but cannot separate from a sibling.
_NOT_MAPPED = {"yue": "lingua's CHINESE does not separate Cantonese from Mandarin"}
MAPPING_FILE = "data/lid_lingua.json"


@dataclass(frozen=True)
class LidResult:
    status: str  # pass | fail | skipped
    expected: str
    detected: str | None = None  # the registry code of lingua's answer (its name if unmapped)
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.status != "fail"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lingua_mapping() -> dict[str, str | None]:
    """{Tiny Aya code: lingua Language name, or None where lingua lacks it}, computed from lingua."""
    from lingua import Language

    by_1 = {lang.iso_code_639_1.name.lower(): lang.name for lang in Language.all()}
    by_3 = {lang.iso_code_639_3.name.lower(): lang.name for lang in Language.all()}
    out: dict[str, str | None] = {}
    for lang in tiny_aya():
        if lang.code in _NOT_MAPPED:
            out[lang.code] = None
            continue
        out[lang.code] = by_1.get(lang.iso639_1 or "") or by_3.get(lang.iso639_3)
    return out


@cache
def committed_mapping() -> dict[str, Any]:
    """data/lid_lingua.json: the mapping, the languages lingua lacks and why some are left out."""
    path = resources.files("aetheris").joinpath(MAPPING_FILE)
    return json.loads(path.read_text(encoding="utf-8"))


def mapping_document() -> dict[str, Any]:
    """What data/lid_lingua.json holds (scripts/tests regenerate and compare it)."""
    from importlib.metadata import version

    mapping = lingua_mapping()
    return {
        "library": "lingua-language-detector",
        "version": version("lingua-language-detector"),
        "mapping": mapping,
        "lacking": sorted(code for code, name in mapping.items() if name is None),
        "not_mapped_on_purpose": _NOT_MAPPED,
    }


class LanguageChecker:
    """Is a reply in the prompt's language? Built once; lingua loads each language model lazily."""

    def __init__(self, min_chars: int = 20, accuracy: str = "high") -> None:
        from lingua import Language, LanguageDetectorBuilder

        mapping = committed_mapping()["mapping"]
        self.min_chars = min_chars
        self._to_lingua = {code: getattr(Language, name) for code, name in mapping.items() if name}
        # zh-Hans and zh-Hant share CHINESE: the reverse map names the first; checks compare lingua's
        self._from_lingua = {}
        for code, lang in self._to_lingua.items():
            self._from_lingua.setdefault(lang, code)
        # Only languages a prompt can be in: a correct reply is less often mistaken for an outsider.
        builder = LanguageDetectorBuilder.from_languages(*set(self._to_lingua.values()))
        self._detector = (builder.with_low_accuracy_mode() if accuracy == "low" else builder).build()

    def supports(self, lang: str) -> bool:
        return lang in self._to_lingua

    def check(self, text: str, lang: str) -> LidResult:
        if lang not in self._to_lingua:
            return LidResult("skipped", lang, reason="lingua has no model for this language")
        letters = sum(ch.isalpha() for ch in text)
        if letters < self.min_chars:
            return LidResult("skipped", lang, reason=f"{letters} letters < lid_min_chars={self.min_chars}")
        found = self._detector.detect_language_of(text)
        if found is None:
            return LidResult("skipped", lang, reason="lingua could not decide")
        detected = self._from_lingua.get(found, found.name)
        if found == self._to_lingua[lang]:
            return LidResult("pass", lang, lang)
        return LidResult("fail", lang, detected, reason=f"reply detected as {detected}, prompt is {lang}")
