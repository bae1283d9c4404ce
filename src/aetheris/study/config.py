"""The study config (YAML): the teacher, the models to compare, an evaluation profile.

Everything is checked here, before any model is built or loaded: method names and settings
(through the compress registry), profile and task languages, model names and folders, the
`of:` references of compositions and the rows named in `compare:`. Every error is one line
naming the file and the key.

    teacher: {model: gemma3-270m}
    profile: demo
    models:
      - {name: int8, compress: {method: int8}}
      - {name: wanda-50, compress: {method: wanda, settings: {sparsity: 0.5}}}
      - {name: kd, path: runs/hybrid/full-50-upcycle/kd, optional: true}
      - {name: kd-int8, of: kd, compress: {method: int8}}
    compare:                          # paired DES(a) - DES(b) in the report
      - {a: wanda-50, b: int8}

Relative paths are read from the directory the command runs in (the repository root).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aetheris.config_file import read_yaml_mapping
from aetheris.errors import BadValueError, UserError
from aetheris.study.profiles import PROFILES, TINY_AYA, Profile, TaskPlan, tiny_aya_codes

TEACHER = "teacher"  # the row name of the teacher, and the default `of:` of a compress spec
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class StudyConfigError(UserError, ValueError):
    """A study config that cannot be used: the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CompressSpec(_Strict):
    method: str
    settings: dict[str, Any] = {}


class TeacherEntry(_Strict):
    model: str  # any name `aetheris teacher info` accepts
    instruction_tuned: bool = False  # profiles run tool calling only for instruction-tuned teachers


class ModelEntry(_Strict):
    """One row: a folder (`path`, e.g. a distilled student) or a compress spec applied to the
    teacher or to another row (`of`), which makes compositions such as int8 of a student."""

    name: str
    path: str | None = None
    compress: CompressSpec | None = None
    of: str = TEACHER
    optional: bool = False  # a folder that may not exist yet: reported as missing, not an error

    @model_validator(mode="after")
    def _one_kind(self) -> ModelEntry:
        if (self.path is None) == (self.compress is None):
            raise ValueError("give exactly one of path (a model folder) or compress (method + settings)")
        if self.path is not None and self.of != TEACHER:
            raise ValueError("of: only a compress spec is built from another model")
        if not NAME.match(self.name) or self.name == TEACHER:
            raise ValueError(f"name {self.name!r}: letters, digits, '.', '_' or '-', and not {TEACHER!r}")
        return self

    @property
    def method(self) -> str:
        """What the plots colour by: the compress method, or 'student' for a folder."""
        return self.compress.method if self.compress else "student"


class ComparePair(_Strict):
    """Two rows whose DES the report compares with a paired interval (a minus b)."""

    a: str
    b: str


class SpeedSettings(_Strict):
    prompt_tokens: int = Field(128, ge=1)  # prefill length
    new_tokens: int = Field(32, ge=2)  # greedy decode steps
    repeats: int = Field(3, ge=1)  # best of: the least disturbed by other work on the machine


class StudyConfig(_Strict):
    name: str = "study"
    teacher: TeacherEntry
    profile: str
    models: list[ModelEntry] = Field(min_length=1)
    out: str = "runs/study"
    # The small outputs (item cache, results files, speed facts, report), when they should live
    # apart from the built models: a committed folder lets a study resume on a new machine, where
    # only the models are rebuilt. Default: `out`.
    results: str | None = None
    dtype: str = "native"  # as `aetheris eval --dtype`
    batch_size: int = Field(8, ge=1)
    device: str = "cpu"
    speed: SpeedSettings = SpeedSettings()
    n_boot: int = Field(1000, ge=0)
    n_perm: int = Field(10000, ge=0)
    seed: int = 0
    compare: list[ComparePair] = []

    def profile_obj(self) -> Profile:
        return PROFILES[self.profile]

    def plans(self) -> list[TaskPlan]:
        return self.profile_obj().plans_for(self.teacher.instruction_tuned)

    def languages(self) -> dict[str, list[str] | None]:
        """{task: language codes} with `tiny-aya` expanded."""
        out: dict[str, list[str] | None] = {}
        for p in self.plans():
            langs = p.languages
            if langs and TINY_AYA in langs:
                langs = [*tiny_aya_codes(p.task), *(c for c in langs if c != TINY_AYA)]
            out[p.task] = langs
        return out

    def limits(self) -> dict[str, int | None]:
        return {p.task: p.limit for p in self.plans()}

    def entry(self, name: str) -> ModelEntry | None:
        """The `models:` entry named `name`; None for the teacher's row, which has none."""
        return next((m for m in self.models if m.name == name), None)


def _pydantic_error(path: Path, err: ValidationError, data: dict) -> StudyConfigError:
    first = err.errors()[0]
    loc = list(first["loc"])
    key = _key(loc, data)
    value = first.get("input")
    shown = "" if first["type"] == "missing" or isinstance(value, dict | list) else f"={value!r}"
    msg = first["msg"].removeprefix("Value error, ")
    return StudyConfigError(f"{path}: {key}{shown}: {msg}")


def _key(loc: list, data: dict) -> str:
    """A readable key: models[2] (wanda-50).compress.method."""
    parts, node = [], data
    for p in loc:
        if isinstance(p, int):
            name = node[p].get("name") if isinstance(node, list) and isinstance(node[p], dict) else None
            parts[-1] += f"[{p}]" + (f" ({name})" if name else "")
        else:
            parts.append(str(p))
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts) or "(top level)"


def load_study(path: str | Path) -> StudyConfig:
    """Read and check a study config; StudyConfigError (exit 2 on the CLI) names the bad key."""
    path = Path(path)
    data = read_yaml_mapping(path, StudyConfigError)
    try:
        cfg = StudyConfig.model_validate(data)
    except ValidationError as e:
        raise _pydantic_error(path, e, data) from None
    check(cfg, path)
    return cfg


def check(cfg: StudyConfig, path: Path | str) -> None:
    """Everything that needs the registries: no model is loaded."""
    from aetheris.compress import SettingsError, parse_settings
    from aetheris.eval.runner import plan_languages, resolve_tasks
    from aetheris.eval.tasks import UnknownLanguageError
    from aetheris.teacher.load import resolve_model

    def fail(key: str, msg: str) -> StudyConfigError:
        return StudyConfigError(f"{path}: {key}: {msg}")

    if cfg.profile not in PROFILES:
        raise fail(f"profile={cfg.profile!r}", f"expected one of {', '.join(PROFILES)}")
    from aetheris.cli import EVAL_DTYPES

    if cfg.dtype not in EVAL_DTYPES:
        raise fail(f"dtype={cfg.dtype!r}", f"expected one of {', '.join(EVAL_DTYPES)}")
    try:
        resolve_model(cfg.teacher.model)
    except UserError as e:
        raise fail("teacher.model", str(e)) from None
    tasks = resolve_tasks([p.task for p in cfg.plans()])
    for t in tasks:
        try:
            plan_languages([t], cfg.languages()[t.name])
        except UnknownLanguageError as e:
            raise fail(f"profile {cfg.profile}: {t.name} languages", str(e)) from None
    seen = {TEACHER}
    for i, m in enumerate(cfg.models):
        where = f"models[{i}] ({m.name})"
        if m.name in seen:
            raise fail(f"{where}.name", f"{m.name!r} is used twice; every row needs its own name")
        if m.compress is not None:
            if m.of not in seen:  # earlier rows only: no cycles, and the build order is the file's
                raise fail(f"{where}.of={m.of!r}", f"expected {TEACHER!r} or the name of an earlier row")
            try:
                parse_settings(m.compress.method, m.compress.settings)
            except SettingsError as e:
                key = "method" if str(e).startswith("method=") else "settings"
                raise fail(f"{where}.compress.{key}", str(e)) from None
        elif not Path(m.path).exists() and not m.optional:
            raise fail(f"{where}.path={m.path!r}", "no such folder (mark the row `optional: true` "
                       "to report it as missing until it exists)")  # fmt: skip
        elif Path(m.path).exists():
            try:
                resolve_model(m.path)
            except UserError as e:
                raise fail(f"{where}.path", str(e)) from None
        seen.add(m.name)
    names = [m.name for m in cfg.models]
    for i, pair in enumerate(cfg.compare):
        for key in ("a", "b"):
            if (name := getattr(pair, key)) not in names:
                raise fail(f"compare[{i}].{key}={name!r}", f"expected the name of a row ({', '.join(names)})")
        if pair.a == pair.b:
            raise fail(f"compare[{i}]", f"a and b are both {pair.a!r}; compare two different rows")
    if cfg.device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", cfg.device):
        raise fail(f"device={cfg.device!r}", "expected cpu, cuda or cuda:N")
    if not tasks:
        raise BadValueError(f"{path}: profile {cfg.profile}: no task runs for this teacher")
