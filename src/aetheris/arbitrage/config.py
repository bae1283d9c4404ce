"""The arbitrage config (YAML), validated in full before any model is loaded.

    pool:                         # models that answer; any name `aetheris teacher info` takes, or a student
      - model: gemma3-270m
      - model: smollm2-135m
        languages: [en]           # optional: it answers only prompts in these languages
    prompts:
      tools: [embedded]           # tool-calling items (embedded = the training split), or item JSONL files
      chats: [embedded:chat]      # chats (rows with messages): prompt = up to the last assistant turn
      languages: null             # keep only these languages
      per_language: null          # at most this many prompts per language and kind
    generation: {max_new_tokens: 128, samples: 1, temperature: 0.0}
    checks: {language_id: true, tool_checker: true, lid_min_chars: 20, lid_accuracy: high}
    arbiter: {name: likelihood}   # or fixed / reward, with their own keys
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aetheris.config_file import read_yaml_mapping
from aetheris.errors import UserError


class ArbitrageConfigError(UserError, ValueError):
    """A bad arbitrage config: one line naming the file, the key and what was expected."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoolModel(_Strict):
    model: str = Field(description="embedded teacher, model folder, .gguf file or hub id")
    name: str | None = Field(None, description="label in the output (default: the model's display name)")
    languages: list[str] | None = Field(None, description="languages this model answers (default: all)")
    dtype: str = "float32"

    @field_validator("model")
    @classmethod
    def _resolvable(cls, v: str) -> str:
        from aetheris.teacher.load import resolve_model

        resolve_model(v)  # ModelNotFoundError (a UserError) names the value
        return v

    @field_validator("languages")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [_canonical(c) for c in v]

    @property
    def label(self) -> str:
        from aetheris.teacher.load import display_name

        return self.name or display_name(self.model)


class Prompts(_Strict):
    tools: list[str] = Field(default_factory=list, description="embedded (training split) or item JSONL files")
    chats: list[str] = Field(default_factory=list, description="embedded:chat, .jsonl/.parquet, folder, hf:")
    languages: list[str] | None = None
    per_language: int | None = Field(None, gt=0)

    @field_validator("tools")
    @classmethod
    def _tool_files(cls, v: list[str]) -> list[str]:
        missing = [s for s in v if s != "embedded" and not Path(s).is_file()]
        if missing:
            raise ValueError(f"{missing}: expected 'embedded' or existing tool-item .jsonl files")
        return v

    @field_validator("chats")
    @classmethod
    def _chat_specs(cls, v: list[str]) -> list[str]:
        from aetheris.data.sources import check_spec

        for spec in v:
            check_spec(spec)
        return v

    @field_validator("languages")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [_canonical(c) for c in v]

    @model_validator(mode="after")
    def _some(self) -> Prompts:
        if not self.tools and not self.chats:
            raise ValueError("name at least one source under tools or chats")
        return self


class Generation(_Strict):
    max_new_tokens: int = Field(128, gt=0)
    samples: int = Field(1, gt=0, description="candidates per model and prompt")
    temperature: float = Field(0.0, ge=0, description="0 = greedy (then samples must be 1)")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = 0
    batch_size: int = Field(8, gt=0, description="prompts generated together")
    stop: list[str] = Field(
        default_factory=lambda: ["<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "<|tool|>"],
        description="stop strings (the fallback chat template's turn markers)",
    )

    @model_validator(mode="after")
    def _greedy_once(self) -> Generation:
        if self.temperature == 0 and self.samples > 1:
            raise ValueError(f"samples={self.samples} with temperature=0: greedy gives one candidate")
        return self


class Checks(_Strict):
    language_id: bool = True
    tool_checker: bool = True
    lid_min_chars: int = Field(20, ge=0, description="shorter replies skip language ID (recorded)")
    # lingua's high-accuracy mode is the better one on short text but loads its models for ~25 s
    # (2 shared cores); low is trigrams only and loads in ~1 s.
    lid_accuracy: Literal["high", "low"] = "high"
    # Copying the request is what a base model finds most likely: the likelihood arbiter would keep it.
    echo_ratio: float | None = Field(0.8, gt=0, le=1, description="reject a reply this similar to the "
                                     "last user turn (difflib ratio); null = keep echoes")


class RunSettings(_Strict):
    pool: list[PoolModel] = Field(min_length=1)
    prompts: Prompts
    generation: Generation = Field(default_factory=Generation)
    checks: Checks = Field(default_factory=Checks)
    arbiter: dict[str, Any] = Field(default_factory=lambda: {"name": "likelihood"})

    @model_validator(mode="after")
    def _unique_labels(self) -> RunSettings:
        labels = [m.label for m in self.pool]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"pool labels {dup} repeat; give each model a distinct name")
        return self


def _canonical(code: str) -> str:
    from aetheris.languages import get

    return get(code).code  # UnknownLanguageError lists close matches


def parse_settings(data: Any, source: str = "<config>") -> tuple[RunSettings, Any]:
    """(settings, the arbiter's own validated config); one-line ArbitrageConfigError otherwise."""
    from aetheris.arbitrage.arbiters import parse_arbiter

    if not isinstance(data, dict):
        raise ArbitrageConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        settings = RunSettings.model_validate(data)
    except ValidationError as e:
        raise ArbitrageConfigError(f"{source}: {_first(e)}") from None
    except UserError as e:
        raise ArbitrageConfigError(f"{source}: {e}") from None
    try:
        arbiter = parse_arbiter(settings.arbiter, [m.label for m in settings.pool])
    except ValidationError as e:
        raise ArbitrageConfigError(f"{source}: arbiter.{_first(e)}") from None
    except UserError as e:
        raise ArbitrageConfigError(f"{source}: arbiter: {e}") from None
    return settings, arbiter


def load_settings(path: str | Path) -> tuple[RunSettings, Any]:
    return parse_settings(read_yaml_mapping(path, ArbitrageConfigError), str(path))


def _first(e: ValidationError) -> str:
    """The first problem as `key.path: message` (one line), and how many more there are."""
    errors = e.errors()
    err = errors[0]
    loc = ".".join(str(p) for p in err["loc"]) or "<top level>"
    msg = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {msg}{more}".replace("\n", " ")
