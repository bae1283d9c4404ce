"""Who paid for compression: per-language drops, family drops, the Degradation Equity Score.

Input is two results files (`aetheris.eval.results`: teacher, student). For every task
they share: drop per language (positive = worse), mean drop per family (or finer group), and the
Degradation Equity Score (DES) = population variance of the family mean drops (lower = fairer).
Uncertainty comes from a percentile bootstrap over items (paired by item id when teacher and
student scored the same items) and a permutation test of "the drop does not depend on family".
`des_difference` compares two students' DES on the same items: a paired bootstrap of DES(a) − DES(b).
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


def _drop_replicates(
    task: str, lang: str, t: LanguageResult, s: LanguageResult, hib: bool, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """Bootstrap replicates (n_boot,) of the language's drop and of the teacher's score, and whether
    they are paired by item id; None without items. Two students paired with the same teacher get
    the same resampled items (one stream per task and language), so their replicates pair too."""
    reps = _boot_scores(t, s, n_boot, _rng(seed, task, lang))
    if reps is None:
        return None
    t_b, s_b, paired = reps
    return _oriented(t_b, s_b, hib), t_b, paired


def _families(langs: Sequence[str], family_of: Mapping[str, str]) -> dict[str, list[str]]:
    """family -> its languages, families sorted (the order of the rows and of DES's replicates)."""
    out: dict[str, list[str]] = {}
    for lang in langs:
        out.setdefault(family_of[lang], []).append(lang)
    return dict(sorted(out.items()))


def _family_means(values: Mapping[str, float | np.ndarray], families: Mapping[str, list[str]]) -> dict:
    """family -> mean of its languages' values (numbers or replicate arrays), for the families
    whose every language has a value."""
    return {fam: np.mean([values[lang] for lang in langs], axis=0)
            for fam, langs in families.items() if all(lang in values for lang in langs)}  # fmt: skip


def _des_replicates(fam_reps: Mapping[str, np.ndarray], families: Mapping[str, list[str]]) -> np.ndarray | None:
    """DES of every bootstrap replicate, when every family has replicates."""
    if not fam_reps or len(fam_reps) < len(families):
        return None
    return np.var(np.stack(list(fam_reps.values())), axis=0)


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


class DESDifference(BaseModel):
    """DES(a) − DES(b) on one task, both against the same teacher over the same items: the
    bootstrap resamples the same items for a and b, so the interval is paired."""

    task: str
    teacher: str
    a: str
    b: str
    des_a: float
    des_b: float
    difference: float  # des_a - des_b: positive = a is less fair
    difference_ci: Interval | None = None  # None with n_boot = 0
    share_a_higher: float | None = None  # fraction of replicates with DES(a) > DES(b)
    languages: list[str]
    paired: bool = True  # always: unpaired items raise instead


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
    boot: dict[str, np.ndarray] = {}  # lang -> drop replicates
    for lang in langs:
        t, s = teacher.languages[lang], student.languages[lang]
        drop = float(_oriented(t.score, s.score, hib))
        rel = None if t.score == 0 else drop / abs(t.score)
        row = LanguageDrop(
            language=lang, family=family_of[lang], teacher=t.score, student=s.score, drop=drop,
            relative_drop=rel,
        )
        reps = _drop_replicates(task, lang, t, s, hib, n_boot, seed) if n_boot > 0 else None
        if reps is not None:
            boot[lang], t_b, row.paired = reps
            r_b = _relative(boot[lang], t_b)
            row.drop_ci = _interval(boot[lang])
            if rel is not None and np.all(np.isfinite(r_b)):
                row.relative_drop_ci = _interval(r_b)
        rows.append(row)

    groups = _families(langs, family_of)
    fam_drop = _family_means({r.language: r.drop for r in rows}, groups)
    fam_rel_of = _family_means({r.language: r.relative_drop for r in rows if r.relative_drop is not None}, groups)
    fam_boot = _family_means(boot, groups)
    families = [
        FamilyDrop(family=fam, languages=members, drop=float(fam_drop[fam]),
                   relative_drop=float(fam_rel_of[fam]) if fam in fam_rel_of else None,
                   drop_ci=_interval(fam_boot[fam]) if fam in fam_boot else None)
        for fam, members in groups.items()
    ]  # fmt: skip
    des_boot = _des_replicates(fam_boot, groups)

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
        des_ci=None if des_boot is None else _interval(des_boot),
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


# ---------------------------------------------------------------------------------------------
# Paired difference of two students' DES
# ---------------------------------------------------------------------------------------------


def _paired_des(
    task: str, teacher: TaskResult, student: TaskResult, name: str, families: Mapping[str, list[str]],
    n_boot: int, seed: int,
) -> tuple[float, np.ndarray]:
    """A student's DES over `families`' languages and its bootstrap replicates, paired by item id
    with the teacher (ValueError naming the first language that does not pair)."""
    hib = teacher.higher_is_better
    drops, reps = {}, {}
    for lang in (lang for langs in families.values() for lang in langs):
        t, s = teacher.languages[lang], student.languages[lang]
        drops[lang] = float(_oriented(t.score, s.score, hib))
        boot = _drop_replicates(task, lang, t, s, hib, n_boot, seed)
        if boot is None or not boot[2]:
            raise ValueError(f"task {task!r}, language {lang!r}: {name}'s items do not pair with the "
                             "teacher's (no items, or other item ids); a paired DES difference needs the same items")
        reps[lang] = boot[0]
    return des(list(_family_means(drops, families).values())), _des_replicates(_family_means(reps, families), families)


def des_difference(
    teacher: ResultsLike,
    a: ResultsLike,
    b: ResultsLike,
    task: str,
    *,
    family_of: Mapping[str, str] | None = None,
    level: Level = "family",
    n_boot: int = 1000,
    seed: int = 0,
) -> DESDifference:
    """DES(a) − DES(b) on `task` with a paired bootstrap interval, over the languages all three
    results share. Every replicate resamples the same items for a and b (the streams of
    `compare_task`), so DES(a) and DES(b) here equal `compare`'s for the same seed and languages.

    Raises ValueError when a language's items do not pair: an unpaired difference would be wrong.
    """
    res = {"teacher": load_results(teacher), "a": load_results(a), "b": load_results(b)}
    lacking = [r.model_name for r in res.values() if task not in r.tasks]
    if lacking:
        raise ValueError(f"task {task!r} not scored for {', '.join(lacking)}")
    t, ta, tb = (r.tasks[task] for r in res.values())
    if not t.higher_is_better == ta.higher_is_better == tb.higher_is_better:
        raise ValueError(f"task {task!r}: the three results disagree on higher_is_better")
    langs = sorted(set(t.languages) & set(ta.languages) & set(tb.languages))
    if not langs:
        raise ValueError(f"task {task!r}: teacher, a and b share no language")
    family_of = default_family_map(level) if family_of is None else family_of
    unknown = [lang for lang in langs if lang not in family_of]
    if unknown:
        raise ValueError(f"task {task!r}: no family known for language(s) {', '.join(unknown)}")
    groups = _families(langs, family_of)
    des_a, boot_a = _paired_des(task, t, ta, res["a"].model_name, groups, n_boot, seed)
    des_b, boot_b = _paired_des(task, t, tb, res["b"].model_name, groups, n_boot, seed)
    diff = boot_a - boot_b
    return DESDifference(
        task=task, teacher=res["teacher"].model_name, a=res["a"].model_name, b=res["b"].model_name,
        des_a=des_a, des_b=des_b, difference=des_a - des_b,
        difference_ci=_interval(diff) if n_boot > 0 else None,
        share_a_higher=float(np.mean(boot_a > boot_b)) if n_boot > 0 else None,
        languages=langs,
    )  # fmt: skip
