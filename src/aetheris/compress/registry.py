"""The compression methods, one file each, behind one small registry (mergekit's merge_methods/).

A method is a `CompressionMethod`: a name, a pydantic `Settings` model (unknown keys and bad
values are rejected with the key's name) and `apply(model, tokenizer, settings)`, which returns
the compressed model (and may replace the tokenizer, as vocab-trim does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError


class SettingsError(ValueError):
    """A bad method name or setting; the message names the key and what was expected."""


class MethodSettings(BaseModel):
    """Base of every method's settings: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Outcome:
    """What `apply` hands back: the model, the tokenizer to save with it, and method facts."""

    model: Any
    tokenizer: Any
    details: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None


class CompressionMethod:
    name: ClassVar[str]
    Settings: ClassVar[type[MethodSettings]]
    summary: ClassVar[str]

    def apply(self, model: Any, tokenizer: Any, settings: MethodSettings) -> Outcome:
        raise NotImplementedError


def _methods() -> dict[str, CompressionMethod]:
    # Imported here: each method module imports its own heavy dependencies lazily.
    from aetheris.compress.magnitude import Magnitude
    from aetheris.compress.quantise import Int4, Int8
    from aetheris.compress.shortgpt import ShortGPT
    from aetheris.compress.sparsegpt import SparseGPT
    from aetheris.compress.vocab_trim import VocabTrim
    from aetheris.compress.wanda import Wanda

    classes = (Int8, Int4, Magnitude, Wanda, SparseGPT, ShortGPT, VocabTrim)
    return {cls.name: cls() for cls in classes}


def method_names() -> list[str]:
    return list(_methods())


def get_method(name: str) -> CompressionMethod:
    methods = _methods()
    if name not in methods:
        raise SettingsError(f"method={name!r}: expected one of {', '.join(methods)}")
    return methods[name]


def parse_settings(method: str, settings: Mapping[str, Any] | MethodSettings | None) -> MethodSettings:
    """Validate settings for `method`; the first bad key becomes a one-line SettingsError."""
    cls = get_method(method).Settings
    if isinstance(settings, cls):
        return settings
    try:
        return cls.model_validate(dict(settings or {}))
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        shown = "" if err["type"] == "missing" or not key else f"={err.get('input')!r}"
        where = f"{method} setting {key}{shown}" if key else f"{method} settings"
        message = err["msg"].removeprefix("Value error, ")
        fields = ", ".join(cls.model_fields)
        raise SettingsError(f"{where}: {message} (settings of {method}: {fields})") from None
