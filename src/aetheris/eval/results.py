"""The results file: what `aetheris eval` writes and equity, report and study read.

One JSON file per model, schema ``aetheris.results/1``::

    {"schema": "aetheris.results/1", "model": <path or hub id>, "model_name": <display name>,
     "created": <UTC time>, "tasks": {<task>: {"metric", "higher_is_better",
       "languages": {<lang>: {"score", "n", "items": [{"id", "score", ...}, ...]}}}}}

Items keep every field their task wrote (``pred``, ``output``, ``category``, ...); bits-per-byte
tasks add ``bits`` and ``bytes``. A language's ``score`` is the statistic of its items (mean item
score, or sum(bits) / sum(bytes)): `statistic` is that rule, for one set of items or for many
bootstrap resamples at once, and reading a file checks it, so intervals built from the items
describe the recorded score.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

SCHEMA = "aetheris.results/1"


class ResultsError(ValueError):
    """A results file that cannot be read: one line naming the file and what is wrong."""


class ItemResult(BaseModel):
    """One scored item. Task-specific fields are kept as they were written."""

    model_config = ConfigDict(extra="allow")

    id: str
    score: float
    bits: float | None = None
    bytes: float | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, v: object) -> object:
        return str(v) if isinstance(v, int) else v

    @model_serializer(mode="wrap")
    def _only_written_fields(self, handler: Any) -> dict[str, Any]:
        # Items of accuracy tasks carry no bits/bytes: write none rather than nulls.
        data = handler(self)
        for key in ("bits", "bytes"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class LanguageResult(BaseModel):
    score: float
    n: int
    items: list[ItemResult] = []

    @model_validator(mode="after")
    def _score_is_its_items(self) -> LanguageResult:
        if not self.items:  # a summary without items: nothing to check it against
            return self
        ratio = [it.bits is not None and it.bytes is not None for it in self.items]
        if any(ratio) and not all(ratio):
            raise ValueError("either every item carries `bits` and `bytes` or none does")
        if self.n != len(self.items):
            raise ValueError(f"n is {self.n} but there are {len(self.items)} items")
        recomputed = aggregate(self.items)
        same = math.isclose(recomputed, self.score, rel_tol=1e-6, abs_tol=1e-9)
        if not same and not (math.isnan(recomputed) and math.isnan(self.score)):
            raise ValueError(f"score {self.score} but its items give {recomputed}")
        return self

    def item_scores(self) -> dict[str, float]:
        return {it.id: it.score for it in self.items}


class TaskResult(BaseModel):
    metric: str
    higher_is_better: bool
    languages: dict[str, LanguageResult]


class ModelResults(BaseModel):
    """Every task and language one model was scored on."""

    # "schema" would shadow a BaseModel attribute, hence the alias.
    schema_: str = Field(SCHEMA, alias="schema")
    model: str
    model_name: str
    created: str | None = None
    tasks: dict[str, TaskResult]

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("schema_")
    @classmethod
    def _known_schema(cls, v: str) -> str:
        if v != SCHEMA:
            raise ValueError(f"is {v!r}, expected {SCHEMA!r}")
        return v

    def item_scores(self, task: str, lang: str) -> dict[str, float]:
        """{item id: score} of one task and language (KeyError naming what is missing)."""
        if task not in self.tasks:
            raise KeyError(f"{self.model_name}: no task {task!r}; it has {', '.join(self.tasks)}")
        languages = self.tasks[task].languages
        if lang not in languages:
            raise KeyError(f"{self.model_name}: task {task!r} has no language {lang!r}")
        return languages[lang].item_scores()

    def merge(self, other: ModelResults) -> ModelResults:
        """One model's results from several runs (e.g. one per task) as one; conflicts refused."""
        if other.model != self.model:
            raise ValueError(f"cannot merge results of {other.model!r} into those of {self.model!r}")
        tasks = {name: task.model_copy(deep=True) for name, task in self.tasks.items()}
        for name, task in other.tasks.items():
            mine = tasks.setdefault(name, task.model_copy(update={"languages": {}}))
            if (mine.metric, mine.higher_is_better) != (task.metric, task.higher_is_better):
                raise ValueError(f"task {name!r}: the two results disagree on its metric")
            for lang, result in task.languages.items():
                if lang in mine.languages and mine.languages[lang] != result:
                    raise ValueError(f"task {name!r}, language {lang!r}: the two results differ")
                mine.languages[lang] = result.model_copy(deep=True)
        return self.model_copy(update={"tasks": tasks, "created": other.created or self.created})

    def to_json(self) -> dict[str, Any]:
        """The file's content as plain JSON values."""
        return self.model_dump(by_alias=True)


ResultsLike = ModelResults | Mapping | str | Path


# -- the language score -------------------------------------------------------------------------


def item_arrays(items: Sequence[ItemResult], order: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The items' numbers as arrays (``score``; ``bits`` and ``bytes`` when they carry them),
    in the order of the ids in `order` when given (to pair two models' items)."""
    if order is not None:
        by_id = {it.id: it for it in items}
        items = [by_id[i] for i in order]
    out = {"score": np.array([it.score for it in items], dtype=float)}
    if items and items[0].bits is not None and items[0].bytes is not None:
        out["bits"] = np.array([it.bits for it in items], dtype=float)
        out["bytes"] = np.array([it.bytes for it in items], dtype=float)
    return out


def statistic(arrays: Mapping[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
    """The language score of each row of item indices `idx` (n_rows, n): mean score, or
    sum(bits) / sum(bytes) (NaN for no bytes)."""
    if "bits" in arrays:
        total = arrays["bytes"][idx].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total > 0, arrays["bits"][idx].sum(axis=1) / total, np.nan)
    return arrays["score"][idx].mean(axis=1)


def aggregate(items: Sequence[ItemResult]) -> float:
    """The language score of a list of items (NaN when there are none)."""
    if not items:
        return float("nan")
    return float(statistic(item_arrays(items), np.arange(len(items))[None, :])[0])


# -- files --------------------------------------------------------------------------------------


def load_results(source: ResultsLike) -> ModelResults:
    """Read and validate a results file (path), a parsed dict, or pass a ModelResults through.

    Raises FileNotFoundError for a missing file and ResultsError (a ValueError) for anything else,
    in one line naming the file and the first bad key.
    """
    if isinstance(source, ModelResults):
        return source
    where = "results"
    if isinstance(source, str | Path):
        where = str(source)
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"results file not found: {source}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ResultsError(f"{source}: cannot read ({e})") from None
        except json.JSONDecodeError as e:
            raise ResultsError(f"{source}: not valid JSON ({e})") from None
    else:
        data = dict(source)
    if not isinstance(data, dict):
        raise ResultsError(f"{where}: expected a JSON object ({SCHEMA}), got {type(data).__name__}")
    try:
        return ModelResults.model_validate(data)
    except ValidationError as e:
        raise ResultsError(f"{where}: not an {SCHEMA} results file: {_first_error(e)}") from None


def save_results(results: ModelResults, path: str | Path) -> Path:
    """Write `results` to `path` atomically (a crash leaves the old file or the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results.to_json(), ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _first_error(e: ValidationError) -> str:
    errors = e.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {msg}{more}"
