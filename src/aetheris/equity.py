"""Who paid for compression: per-language drops, family drops, the Degradation Equity Score.

Input is two results files (`aetheris.eval.results`: teacher, student). For every task
they share: drop per language (positive = worse), mean drop per family (or finer group), and the
Degradation Equity Score (DES) = population variance of the family mean drops (lower = fairer).
Uncertainty comes from a percentile bootstrap over items (paired by item id when teacher and
student scored the same items) and a permutation test of "the drop does not depend on family".
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel
from scipy.stats import spearmanr

from aetheris.eval.results import (
    LanguageResult,
    ResultsLike,
    TaskResult,
    item_arrays,
    load_results,
    statistic,
)

Level = Literal["family", "group"]


# ---------------------------------------------------------------------------------------------
# Bootstrap over items
# ---------------------------------------------------------------------------------------------


def _paired_ids(t: LanguageResult, s: LanguageResult) -> list[str] | None:
    t_ids = [it.id for it in t.items]
    s_ids = [it.id for it in s.items]
    if len(set(t_ids)) == len(t_ids) == len(s_ids) and set(t_ids) == set(s_ids):
        return t_ids
    return None


def _rng(seed: int, *keys: str) -> np.random.Generator:
    # One stream per (task, language): adding a language does not change another one's interval.
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def _boot_scores(
    t: LanguageResult, s: LanguageResult, n_boot: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """Bootstrap replicates (n_boot,) of the teacher and student scores, or None without items."""
    if not t.items or not s.items:
        return None
    ids = _paired_ids(t, s)
    if ids is not None:
        idx = rng.integers(0, len(ids), size=(n_boot, len(ids)))
        return statistic(item_arrays(t.items, ids), idx), statistic(item_arrays(s.items, ids), idx), True
    t_idx = rng.integers(0, len(t.items), size=(n_boot, len(t.items)))
    s_idx = rng.integers(0, len(s.items), size=(n_boot, len(s.items)))
    return statistic(item_arrays(t.items), t_idx), statistic(item_arrays(s.items), s_idx), False


# ---------------------------------------------------------------------------------------------
# Report objects
# ---------------------------------------------------------------------------------------------


class Interval(BaseModel):
    low: float
    high: float


class LanguageDrop(BaseModel):
    language: str
    family: str
    teacher: float
    student: float
    drop: float
    relative_drop: float | None  # drop / teacher score; None when the teacher scored 0
    drop_ci: Interval | None = None
    relative_drop_ci: Interval | None = None
    paired: bool = False


class FamilyDrop(BaseModel):
    family: str
    languages: list[str]
    drop: float
    relative_drop: float | None
    drop_ci: Interval | None = None


class Correlation(BaseModel):
    rho: float
    p_value: float
    n: int


class TaskEquity(BaseModel):
    task: str
    metric: str
    higher_is_better: bool
    languages: list[LanguageDrop]
    families: list[FamilyDrop]
    des: float
    des_ci: Interval | None = None
    des_relative: float | None = None
    permutation_p: float | None = None
    best_family: str
    worst_family: str
    spearman_tier: Correlation | None = None
    spearman_fertility: Correlation | None = None


class EquityReport(BaseModel):
    teacher: str
    student: str
    level: str
    n_boot: int
    n_perm: int
    seed: int
    tasks: dict[str, TaskEquity]


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def des(family_drops: Sequence[float] | np.ndarray) -> float:
    """Degradation Equity Score: population variance (ddof=0) of the family mean drops."""
    return float(np.var(np.asarray(family_drops, dtype=float)))


def permutation_p(
    drops: Sequence[float], families: Sequence[str], n_perm: int = 10000, seed: int = 0
) -> float | None:
    """P-value of "drop does not depend on family": shuffle language->family labels, recompute DES.

    Returns (1 + #{DES_perm >= DES_obs}) / (1 + n_perm); None with fewer than two families.
    """
    x = np.asarray(drops, dtype=float)
    names, codes = np.unique(np.asarray(families), return_inverse=True)
    if len(names) < 2:
        return None
    counts = np.bincount(codes, minlength=len(names))
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.tile(codes, (n_perm, 1)), axis=1)  # (n_perm, n_lang)
    # Family sums of every permutation in one bincount: row p's families are offset by p * n_fam.
    keys = (perms + np.arange(n_perm)[:, None] * len(names)).ravel()
    sums = np.bincount(keys, weights=np.broadcast_to(x, perms.shape).ravel(), minlength=n_perm * len(names))
    means = sums.reshape(n_perm, len(names)) / counts
    observed = des(np.bincount(codes, weights=x) / counts)
    # Tolerance: identical drops give DES equal to observed up to float rounding.
    tol = 1e-12 * max(1.0, float(np.max(np.abs(x))) ** 2)
    hits = int(np.sum(np.var(means, axis=1) >= observed - tol))
    return (1 + hits) / (1 + n_perm)


def _spearman(drops: Mapping[str, float], other: Mapping[str, float] | None) -> Correlation | None:
    if other is None:
        return None
    langs = [lang for lang in drops if lang in other]
    if len(langs) < 3:
        return None
    a = [drops[lang] for lang in langs]
    b = [float(other[lang]) for lang in langs]
    if len(set(a)) < 2 or len(set(b)) < 2:  # rank correlation undefined for a constant
        return None
    res = spearmanr(a, b)
    return Correlation(rho=float(res.statistic), p_value=float(res.pvalue), n=len(langs))


def _interval(samples: np.ndarray) -> Interval:
    low, high = np.percentile(samples, [2.5, 97.5])
    return Interval(low=float(low), high=float(high))


def _oriented(teacher: np.ndarray | float, student: np.ndarray | float, higher_is_better: bool):
    return teacher - student if higher_is_better else student - teacher


def _relative(drop, teacher):
    with np.errstate(divide="ignore", invalid="ignore"):
        return drop / np.abs(teacher)


# ---------------------------------------------------------------------------------------------
# Default maps from the language registry
# ---------------------------------------------------------------------------------------------


class _RegistryLookup(dict):
    """language code (any form the registry resolves: "zh", "swh_Latn", ...) -> one attribute."""

    def __init__(self, attr: str) -> None:
        super().__init__()
        self.attr = attr

    def __missing__(self, code: str):
        from aetheris import languages  # lazy: the registry is a separate module

        try:
            value = getattr(languages.get(code), self.attr)
        except languages.UnknownLanguageError as e:
            raise KeyError(code) from e
        self[code] = value
        return value

    def __contains__(self, code: object) -> bool:
        try:
            self[code]
        except KeyError:
            return False
        return True

    def get(self, code, default=None):
        return self[code] if code in self else default


def default_family_map(level: Level = "family") -> dict[str, str]:
    """language code -> family (or group), from `aetheris.languages`."""
    return _RegistryLookup(level)


def default_tier_map() -> dict[str, int]:
    """language code -> resource tier (0..5), from `aetheris.languages`."""
    return _RegistryLookup("tier")


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------


def compare_task(
    task: str,
    teacher: TaskResult,
    student: TaskResult,
    family_of: Mapping[str, str],
    *,
    tier_of: Mapping[str, float] | None = None,
    fertility_of: Mapping[str, float] | None = None,
    n_boot: int = 1000,
    n_perm: int = 10000,
    seed: int = 0,
) -> TaskEquity:
    """Equity of one task over the languages both models were scored on."""
    if teacher.higher_is_better != student.higher_is_better:
        raise ValueError(f"task {task!r}: teacher and student disagree on higher_is_better")
    hib = teacher.higher_is_better
    langs = sorted(set(teacher.languages) & set(student.languages))
    if not langs:
        raise ValueError(f"task {task!r}: teacher and student share no language")
    unknown = [lang for lang in langs if lang not in family_of]
    if unknown:
        raise ValueError(f"task {task!r}: no family known for language(s) {', '.join(unknown)}")

    rows: list[LanguageDrop] = []
    boot: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # lang -> (drop, relative drop) replicates
    for lang in langs:
        t, s = teacher.languages[lang], student.languages[lang]
        drop = float(_oriented(t.score, s.score, hib))
        rel = None if t.score == 0 else drop / abs(t.score)
        row = LanguageDrop(
            language=lang, family=family_of[lang], teacher=t.score, student=s.score, drop=drop,
            relative_drop=rel,
        )
        reps = _boot_scores(t, s, n_boot, _rng(seed, task, lang)) if n_boot > 0 else None
        if reps is not None:
            t_b, s_b, row.paired = reps
            d_b = _oriented(t_b, s_b, hib)
            r_b = _relative(d_b, t_b)
            boot[lang] = (d_b, r_b)
            row.drop_ci = _interval(d_b)
            if rel is not None and np.all(np.isfinite(r_b)):
                row.relative_drop_ci = _interval(r_b)
        rows.append(row)

    by_family: dict[str, list[LanguageDrop]] = {}
    for row in rows:
        by_family.setdefault(row.family, []).append(row)
    all_boot = len(boot) == len(rows)
    families: list[FamilyDrop] = []
    fam_boot: list[np.ndarray] = []
    for fam in sorted(by_family):
        members = by_family[fam]
        rels = [r.relative_drop for r in members]
        fd = FamilyDrop(
            family=fam,
            languages=[r.language for r in members],
            drop=float(np.mean([r.drop for r in members])),
            relative_drop=None if None in rels else float(np.mean(rels)),
        )
        if all(r.language in boot for r in members):
            samples = np.mean([boot[r.language][0] for r in members], axis=0)
            fd.drop_ci = _interval(samples)
            fam_boot.append(samples)
        families.append(fd)

    fam_rel = [f.relative_drop for f in families]
    worst = max(families, key=lambda f: f.drop)
    best = min(families, key=lambda f: f.drop)
    drops = {r.language: r.drop for r in rows}
    return TaskEquity(
        task=task,
        metric=teacher.metric,
        higher_is_better=hib,
        languages=rows,
        families=families,
        des=des([f.drop for f in families]),
        des_ci=_interval(np.var(np.stack(fam_boot), axis=0)) if all_boot and fam_boot else None,
        des_relative=None if None in fam_rel else des(fam_rel),
        permutation_p=permutation_p(
            [r.drop for r in rows], [r.family for r in rows], n_perm=n_perm, seed=seed
        )
        if n_perm > 0
        else None,
        best_family=best.family,
        worst_family=worst.family,
        spearman_tier=_spearman(drops, tier_of),
        spearman_fertility=_spearman(drops, fertility_of),
    )


def compare(
    teacher_results: ResultsLike,
    student_results: ResultsLike,
    *,
    family_of: Mapping[str, str] | None = None,
    level: Level = "family",
    tier_of: Mapping[str, float] | None = None,
    fertility_of: Mapping[str, float] | None = None,
    tasks: Sequence[str] | None = None,
    n_boot: int = 1000,
    n_perm: int = 10000,
    seed: int = 0,
) -> EquityReport:
    """Equity report of a student against its teacher, for every task both were scored on.

    `family_of` maps language code -> family (or group); when omitted it comes from
    `aetheris.languages` at `level`, and so does `tier_of`. `fertility_of` (language ->
    tokens per character) adds the drop-vs-fertility correlation.
    """
    teacher = load_results(teacher_results)
    student = load_results(student_results)
    if family_of is None:
        family_of = default_family_map(level)
        if tier_of is None:
            tier_of = default_tier_map()
    shared = [t for t in teacher.tasks if t in student.tasks]
    if tasks is not None:
        missing = [t for t in tasks if t not in shared]
        if missing:
            raise ValueError(f"task(s) {', '.join(missing)} not in both results; shared: {shared}")
        shared = list(tasks)
    if not shared:
        raise ValueError(f"{teacher.model_name} and {student.model_name} share no task")
    return EquityReport(
        teacher=teacher.model_name,
        student=student.model_name,
        level=level,
        n_boot=n_boot,
        n_perm=n_perm,
        seed=seed,
        tasks={
            task: compare_task(
                task, teacher.tasks[task], student.tasks[task], family_of,
                tier_of=tier_of, fertility_of=fertility_of, n_boot=n_boot, n_perm=n_perm, seed=seed,
            )
            for task in shared
        },
    )
