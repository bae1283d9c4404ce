"""MERGE.yaml: which model folders to merge, by which method, validated before any work starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aetheris.config_file import read_yaml_mapping
from aetheris.errors import UserError

# mergekit's names for the methods Aetheris exposes (Aya Expanse tried all of them; Tiny Aya uses linear).
METHODS = ("linear", "task_arithmetic", "slerp", "ties", "dare_ties")
NEEDS_BASE = ("task_arithmetic", "slerp", "ties", "dare_ties")  # they merge differences from a base
SPARSE = ("ties", "dare_ties")  # they take a density
DTYPES = ("float32", "bfloat16", "float16")


class MergeConfigError(UserError, ValueError):
    """A merge config that cannot be used: the message names the file and every bad key."""


def _model_folder(value: str) -> str:
    """A local Hugging Face model folder whose weights are safetensors (pickles are never loaded)."""
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ValueError(f"{value}: no such model folder")
    if not (path / "config.json").is_file():
        raise ValueError(f"{value}: the folder holds no config.json; expected a Hugging Face model folder")
    if not any(path.glob("*.safetensors")):
        raise ValueError(f"{value}: no *.safetensors weights in the folder (pickled weights are not loaded)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MergeInput(_Strict):
    model: str = Field(description="model folder (an Aetheris student or a teacher)")
    weight: float = Field(1.0, description="its weight (linear: in the average; task methods: of its task vector)")
    density: float | None = Field(None, gt=0, le=1, description="ties / dare_ties: fraction of its delta kept")

    @field_validator("model")
    @classmethod
    def _folder(cls, v: str) -> str:
        return _model_folder(v)


class MergeConfig(_Strict):
    method: Literal[METHODS]
    models: list[MergeInput] = Field(min_length=1)
    base: str | None = Field(None, description="the model the others' differences are taken from")
    t: float | None = Field(None, ge=0, le=1, description="slerp: 0 = base, 1 = the other model")
    normalize: bool | None = Field(None, description="divide by the sum of weights (mergekit's default per method)")
    dtype: Literal[DTYPES] = Field("float32", description="dtype the merge computes in")
    out_dtype: Literal[DTYPES] | None = Field(None, description="dtype written; default: dtype")
    seed: int = Field(0, description="dare_ties drops at random: the seed makes it repeatable")

    @field_validator("base")
    @classmethod
    def _base_folder(cls, v: str | None) -> str | None:
        return None if v is None else _model_folder(v)

    @model_validator(mode="after")
    def _fits_method(self) -> MergeConfig:
        m = self.method
        if m in NEEDS_BASE and self.base is None:
            raise ValueError(f"method {m} needs `base`: the model the others' differences are taken from")
        if m == "linear" and self.base is not None:
            raise ValueError("method linear takes no `base`: list every model under `models` with its weight")
        if m == "slerp" and (len(self.models) != 1 or self.t is None):
            raise ValueError("method slerp takes `base`, exactly one entry under `models` and `t`")
        if m != "slerp" and self.t is not None:
            raise ValueError(f"method {m} takes no `t` (only slerp does)")
        if m not in SPARSE and any(x.density is not None for x in self.models):
            raise ValueError(f"method {m} takes no `density` (only {', '.join(SPARSE)} do)")
        if m in SPARSE and any(x.density is None for x in self.models):
            raise ValueError(f"method {m} needs a `density` for every entry under `models`")
        if m == "slerp" and any("weight" in x.model_fields_set for x in self.models):
            raise ValueError("method slerp takes no `weight`: `t` sets the mix")
        if m == "slerp" and self.normalize is not None:
            raise ValueError("method slerp takes no `normalize`")
        return self


def _format(errors: list[dict[str, Any]]) -> list[str]:
    lines = []
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            what = "unknown key"
        elif err["type"] == "missing":
            what = "required key is missing"
        elif err["type"] == "value_error":
            what = str(err["ctx"]["error"])
        else:
            what = f"{err['msg'][0].lower()}{err['msg'][1:]}, got {err.get('input')!r}"
        lines.append(f"{loc}: {what}" if loc else what)  # a cross-key rule names its keys itself
    return list(dict.fromkeys(lines))


def parse_merge_config(data: Any, source: str = "<merge config>") -> MergeConfig:
    if not isinstance(data, dict):
        raise MergeConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return MergeConfig.model_validate(data)
    except ValidationError as exc:
        raise MergeConfigError(f"{source}: " + "; ".join(_format(exc.errors()))) from None


def load_merge_config(path: str | Path) -> MergeConfig:
    return parse_merge_config(read_yaml_mapping(path, MergeConfigError), str(path))
