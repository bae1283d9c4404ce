"""Build the equity report: teacher vs every student, every shared task, plus tokenizer fertility."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from aetheris import __version__
from aetheris.equity import (
    DESDifference,
    EquityReport,
    Interval,
    Level,
    compare,
    default_family_map,
    default_tier_map,
    des_difference,
)
from aetheris.eval.results import ModelResults, ResultsLike, load_results
from aetheris.fertility import (
    LanguageFertility,
    ScriptFertility,
    Tokenizer,
    by_script,
    measure,
    tokens_per_char,
)
from aetheris.report import plots
from aetheris.report.render import Block, Figure, Heading, Para, Table, to_html, to_markdown


class ModelFacts(BaseModel):
    """A study row beside its scores: what it is, its size and its speed on the study's machine."""

    name: str
    method: str  # teacher, student, or the compress method (the plots' colour)
    spec: str = ""
    source: str | None = None
    missing: str | None = None  # why the row has no scores
    bytes_on_disk: int | None = None
    parameters: int | None = None
    nonzero_parameters: int | None = None
    bits_per_weight: float | None = None
    prefill_tokens_per_s: float | None = None
    decode_tokens_per_s: float | None = None


class ReportData(BaseModel):
    """What results.json holds."""

    schema_version: str = "aetheris.report/1"
    aetheris_version: str = __version__
    created: str
    teacher: str
    students: list[str]
    level: str
    equity: list[EquityReport]
    fertility: list[LanguageFertility] = []
    fertility_by_script: list[ScriptFertility] = []
    models: list[ModelFacts] = []  # a study's rows (teacher first), with size and speed
    machine: str | None = None  # where a study measured speed
    des_differences: list[DESDifference] = []  # paired DES(a) - DES(b) per task and compared pair
    des_differences_skipped: list[str] = []  # pairs not compared, and why
    title: str = "Aetheris equity report"


def default_flores_map(codes: Sequence[str]) -> dict[str, str]:
    """language code -> FLORES code, from `aetheris.languages` (languages without one are left out)."""
    from aetheris import languages  # lazy: the registry is a separate module

    out = {}
    for code in codes:
        flores = languages.get(code).flores
        if flores:
            out[code] = flores
    return out


def build_report(
    results: Sequence[ResultsLike],
    out_dir: str | Path,
    *,
    teacher: ResultsLike | None = None,
    family_of: Mapping[str, str] | None = None,
    level: Level = "family",
    tier_of: Mapping[str, float] | None = None,
    tokenizers: Mapping[str, Tokenizer] | None = None,
    flores_of: Mapping[str, str] | None = None,
    data_dir: str | Path | None = None,
    n_boot: int = 1000,
    n_perm: int = 10000,
    seed: int = 0,
    models: Sequence[ModelFacts] = (),
    machine: str | None = None,
    pairs: Sequence[tuple[str, str]] = (),
    title: str = "Aetheris equity report",
) -> ReportData:
    """Write report.md (+ figures/), report.html and results.json under `out_dir`.

    The teacher is `teacher` when given (it may or may not also be in `results`), else the first
    of `results`; every other file is a student. Maps default to `aetheris.languages`.
    `models` (a study's rows, named as the results' model_name) adds the one-row-per-model table,
    the frontier and the drop-vs-fertility/tier plots. `pairs` ((a, b) model names) adds the
    paired DES(a) − DES(b) of every task they share; a pair with a row that has no results is
    listed as not compared (with the reason in `models`, when it has one).
    """
    loaded = [(src, load_results(src)) for src in results]
    if teacher is not None:
        t_res = load_results(teacher)
        key = Path(teacher).resolve() if isinstance(teacher, str | Path) else None
        students = [r for src, r in loaded
                    if not (key and isinstance(src, str | Path) and Path(src).resolve() == key)]
    else:
        if not loaded:
            raise ValueError("no results given")
        t_res, students = loaded[0][1], [r for _, r in loaded[1:]]
    if not students:
        raise ValueError("need at least one student results file besides the teacher")

    if family_of is None:
        family_of = default_family_map(level)
        if tier_of is None:
            tier_of = default_tier_map()

    fert_rows: list[LanguageFertility] = []
    fertility_of = None
    if tokenizers:
        langs = sorted({lang for task in t_res.tasks.values() for lang in task.languages})
        flores = dict(flores_of) if flores_of is not None else default_flores_map(langs)
        fert_rows = measure(tokenizers, {k: v for k, v in flores.items() if k in langs}, data_dir)
        fertility_of = tokens_per_char(fert_rows, next(iter(tokenizers)))

    reports = [
        compare(t_res, s, family_of=family_of, level=level, tier_of=tier_of, fertility_of=fertility_of,
                n_boot=n_boot, n_perm=n_perm, seed=seed)
        for s in students
    ]
    differences, skipped = _differences(t_res, students, pairs, models, family_of, level, n_boot, seed)
    data = ReportData(
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        teacher=t_res.model_name,
        students=[s.model_name for s in students],
        level=level,
        equity=reports,
        fertility=fert_rows,
        fertility_by_script=by_script(fert_rows),
        models=list(models),
        machine=machine,
        des_differences=differences,
        des_differences_skipped=skipped,
        title=title,
    )
    _write(data, t_res, Path(out_dir))
    return data


def _differences(
    teacher: ModelResults, students: Sequence[ModelResults], pairs: Sequence[tuple[str, str]],
    models: Sequence[ModelFacts], family_of: Mapping[str, str], level: Level, n_boot: int, seed: int,
) -> tuple[list[DESDifference], list[str]]:
    """The paired DES differences of `pairs` on every task the three share, and a note per pair
    that could not be compared (a row without results, or items that do not pair)."""
    by_name = {s.model_name: s for s in students}
    why = {m.name: m.missing for m in models if m.missing}
    out, skipped = [], []
    for a, b in pairs:
        absent = [n for n in (a, b) if n not in by_name]
        if absent:
            reasons = ", ".join(f"{n}: {why.get(n, 'no results')}" for n in absent)
            skipped.append(f"{a} vs {b} ({reasons})")
            continue
        tasks = [t for t in teacher.tasks if t in by_name[a].tasks and t in by_name[b].tasks]
        for task in tasks:
            try:
                out.append(des_difference(teacher, by_name[a], by_name[b], task, family_of=family_of,
                                          level=level, n_boot=n_boot, seed=seed))  # fmt: skip
            except ValueError as e:  # a report of the other pairs beats no report; the note says why
                skipped.append(f"{a} vs {b}, {task}: {e}")
    return out, skipped


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(ci: Interval | None, digits: int = 3) -> str:
    return "" if ci is None else f" [{ci.low:.{digits}f}, {ci.high:.{digits}f}]"


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name)


def _blocks(data: ReportData, teacher: ModelResults) -> list[Block]:
    tasks = list(dict.fromkeys(t for rep in data.equity for t in rep.tasks))
    rep0 = data.equity[0]
    blocks: list[Block] = [
        Heading(1, data.title),
        Para(f"Teacher: {data.teacher}. Students: {', '.join(data.students)}. "
             f"Languages grouped by {data.level}. Created {data.created}."),
        Para("Drop is oriented so that positive = worse (teacher − student for accuracy, student − "
             "teacher for bits per byte). A family's drop is the mean over its languages. The "
             "Degradation Equity Score (DES) is the population variance of the family drops: 0 when "
             "every family lost the same, larger when some paid more. Intervals are 95% percentile "
             f"bootstrap intervals over items ({rep0.n_boot} resamples, paired by item id); the "
             f"permutation p-value ({rep0.n_perm} shuffles of the language→family labels) tests "
             "\"the drop does not depend on family\". Seed "
             f"{rep0.seed}."),
        Heading(2, "Summary"),
        Table(["task", "student", "DES [95% CI]", "DES (relative)", "permutation p", "best family",
               "worst family", "ρ(drop, tier)", "ρ(drop, fertility)"],
              [[task, rep.student, _num(eq.des, 4) + _ci(eq.des_ci, 4), _num(eq.des_relative, 4),
                _num(eq.permutation_p, 4), eq.best_family, eq.worst_family,
                _num(eq.spearman_tier.rho if eq.spearman_tier else None, 2),
                _num(eq.spearman_fertility.rho if eq.spearman_fertility else None, 2)]
               for task in tasks for rep in data.equity if (eq := rep.tasks.get(task))]),
        Figure("des.png", plots.des_per_model(data.equity, tasks), "Degradation Equity Score per model"),
    ]
    if data.models:
        blocks += study_blocks(data, tasks)
    else:
        blocks += difference_blocks(data)
    for task in tasks:
        reps = [r for r in data.equity if task in r.tasks]
        first = reps[0].tasks[task]
        direction = "higher is better" if first.higher_is_better else "lower is better"
        blocks += [
            Heading(2, f"Task: {task}"),
            Para(f"Metric: {first.metric} ({direction})."),
            Figure(f"{_slug(task)}_families.png", plots.family_drops(reps, task), f"{task}: drop per family"),
            Figure(f"{_slug(task)}_scatter.png", plots.teacher_vs_student(reps, task),
                   f"{task}: teacher vs student per language"),
            Heading(3, "Per family"),
        ]
        fam_maps = [{f.family: f for f in r.tasks[task].families} for r in reps]
        fam_rows = []
        for fam in sorted({fam for m in fam_maps for fam in m}):
            members = next(m[fam].languages for m in fam_maps if fam in m)
            drops = [_num(m[fam].drop) + _ci(m[fam].drop_ci) if fam in m else "" for m in fam_maps]
            rels = [_num(m[fam].relative_drop) if fam in m else "" for m in fam_maps]
            fam_rows.append([fam, ", ".join(members), *drops, *rels])
        blocks.append(Table(
            ["family", "languages"] + [f"{r.student} drop [95% CI]" for r in reps]
            + [f"{r.student} relative" for r in reps],
            fam_rows,
        ))
        blocks.append(Heading(3, "Per language"))
        langs = {r.language: r for r in first.languages}
        by_student = [{row.language: row for row in r.tasks[task].languages} for r in reps]
        rows = []
        for lang in sorted({lang for d in by_student for lang in d}):
            base = langs.get(lang) or next(d[lang] for d in by_student if lang in d)
            row = [lang, base.family, _num(base.teacher)]
            for d in by_student:
                x = d.get(lang)
                row += ["", ""] if x is None else [_num(x.student), _num(x.drop) + _ci(x.drop_ci)]
            rows.append(row)
        blocks.append(Table(
            ["language", data.level, "teacher"]
            + [h for r in reps for h in (f"{r.student}", f"{r.student} drop [95% CI]")],
            rows,
        ))
    if data.fertility:
        blocks += [
            Heading(2, "Tokenizer fertility (FLORES, SIB-200 sentences)"),
            Para("Tokens per character and UTF-8 bytes per token over the same parallel sentences in "
                 "every language; special tokens are not counted. Script values are means over "
                 "languages."),
            Figure("fertility_by_script.png", plots.fertility_by_script(data.fertility_by_script),
                   "Tokens per character by script"),
            Table(["tokenizer", "script", "languages", "tokens/char", "bytes/token"],
                  [[s.tokenizer, s.script, ", ".join(s.languages), _num(s.tokens_per_char),
                    _num(s.bytes_per_token)] for s in data.fertility_by_script]),
            Table(["tokenizer", "language", "FLORES", "sentences", "tokens", "tokens/char", "bytes/token"],
                  [[r.tokenizer, r.language, r.flores, str(r.sentences), str(r.tokens),
                    _num(r.tokens_per_char), _num(r.bytes_per_token)] for r in data.fertility]),
        ]
    return blocks


def _write(data: ReportData, teacher: ModelResults, out: Path) -> None:
    blocks = _blocks(data, teacher)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for b in blocks:
        if isinstance(b, Figure):
            (out / "figures" / b.name).write_bytes(b.png)
    (out / "report.md").write_text(to_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(to_html(blocks, f"{data.title}: {data.teacher}"),
                                     encoding="utf-8")
    (out / "results.json").write_text(json.dumps(data.model_dump(mode="json"), indent=2, ensure_ascii=False)
                                      + "\n", encoding="utf-8")


# -- a study's rows ------------------------------------------------------------------------------


def _mean_scores(data: ReportData, task: str) -> dict[str, float]:
    """Mean score over the task's languages per row (the teacher's over the same languages)."""
    out: dict[str, float] = {}
    for rep in data.equity:
        if task in rep.tasks:
            rows = rep.tasks[task].languages
            out[rep.student] = float(sum(r.student for r in rows) / len(rows))
            out.setdefault(data.teacher, float(sum(r.teacher for r in rows) / len(rows)))
    return out


def _width(ci: Interval | None) -> float | None:
    return None if ci is None else ci.high - ci.low


def _median(values: list[float | None]) -> float | None:
    import statistics

    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:.1f}"


def study_blocks(data: ReportData, tasks: Sequence[str]) -> list[Block]:
    """The study table (one row per model), interval widths, frontier and drop plots."""
    eq = {rep.student: rep for rep in data.equity}
    means = {task: _mean_scores(data, task) for task in tasks}
    present = [m for m in data.models if m.missing is None]
    headers = ["model", "method", "MB on disk", "bits/weight", "prefill tok/s", "decode tok/s"]
    for task in tasks:
        headers += [f"{task} mean", f"{task} DES [95% CI]", f"{task} perm. p", f"{task} worst family (drop)"]
    rows = []
    for m in present:
        row = [m.name, m.method, _mb(m.bytes_on_disk), _num(m.bits_per_weight, 2),
               _num(m.prefill_tokens_per_s, 1), _num(m.decode_tokens_per_s, 1)]
        for task in tasks:
            te = eq[m.name].tasks.get(task) if m.name in eq else None
            mean = means[task].get(m.name)
            if te is None:
                row += [_num(mean), "", "", ""]
                continue
            worst = next(f for f in te.families if f.family == te.worst_family)
            row += [_num(mean), _num(te.des, 4) + _ci(te.des_ci, 4), _num(te.permutation_p, 4),
                    f"{te.worst_family} ({_num(worst.drop)})"]
        rows.append(row)
    blocks: list[Block] = [
        Heading(2, "Models"),
        Para("One row per model. Bytes are the weight files on disk (safetensors); bits per weight = "
             "8 · bytes / parameters (a quantised matrix counts its logical rows × columns). "
             "Tokens/s were measured in this run with greedy generate at batch 1"
             + (f" on {data.machine}" if data.machine else "") + ". A task's mean is over its languages; "
             "DES and the worst family are against the teacher (first row)."),
        Table(headers, rows),
    ]
    missing = [m for m in data.models if m.missing is not None]
    if missing:
        blocks.append(Para("Not in the table: " + "; ".join(f"{m.name} ({m.missing})" for m in missing) + "."))
    blocks += difference_blocks(data)
    width_rows = []
    for task in tasks:
        reps = [r.tasks[task] for r in data.equity if task in r.tasks]
        des_vals = [t.des for t in reps]
        width_rows.append([
            task,
            _num(_median([_width(lang.drop_ci) for t in reps for lang in t.languages]), 4),
            _num(_median([_width(f.drop_ci) for t in reps for f in t.families]), 4),
            _num(_median([_width(t.des_ci) for t in reps]), 5),
            _num(max(des_vals) - min(des_vals), 5) if des_vals else "n/a",
        ])
    blocks += [
        Heading(3, "Interval widths"),
        Para("Medians over models of the 95% interval widths. Two methods' DES can be told apart "
             "only when their difference exceeds about the DES interval width; compare it with the "
             "spread of DES over the models."),
        Table(["task", "language drop CI width", "family drop CI width", "DES CI width",
               "DES spread (max − min)"], width_rows),
    ]
    students = [m for m in present if m.name in eq]
    reports = [eq[m.name] for m in students]
    methods = [m.method for m in students]
    fertility = {r.language: r.tokens_per_char for r in data.fertility
                 if data.fertility and r.tokenizer == data.fertility[0].tokenizer}
    tiers = default_tier_map()
    for task in tasks:
        first = next(r.tasks[task] for r in data.equity if task in r.tasks)
        metric = f"{first.metric} ({'higher' if first.higher_is_better else 'lower'} is better)"
        blocks += [
            Heading(3, f"{task}: frontier and who paid"),
            Figure(f"{_slug(task)}_frontier.png",
                   plots.frontier([m.name for m in present], [m.method for m in present],
                                  [means[task].get(m.name) for m in present],
                                  [m.bytes_on_disk for m in present],
                                  [m.decode_tokens_per_s for m in present], metric, task),
                   f"{task}: mean quality vs bytes on disk and vs decode speed"),
        ]
        langs = {lang.language for r in reports if task in r.tasks for lang in r.tasks[task].languages}
        if fertility:
            blocks.append(Figure(f"{_slug(task)}_drop_fertility.png",
                                 plots.drop_vs(reports, methods, task, fertility,
                                               "teacher tokens per character"),
                                 f"{task}: drop vs tokenizer fertility"))
        tier_of = {lang: float(tiers[lang]) for lang in langs if lang in tiers}
        if tier_of:
            blocks.append(Figure(f"{_slug(task)}_drop_tier.png",
                                 plots.drop_vs(reports, methods, task, tier_of, "resource tier", jitter=0.12),
                                 f"{task}: drop vs resource tier (0 = least resourced)"))
    return blocks


def difference_blocks(data: ReportData) -> list[Block]:
    """Paired DES differences of the compared pairs (nothing when no pair was asked for)."""
    if not data.des_differences and not data.des_differences_skipped:
        return []
    n_boot = data.equity[0].n_boot
    blocks: list[Block] = [
        Heading(3, "Paired DES differences"),
        Para("DES(a) − DES(b) per task, both against the teacher on the same items: every bootstrap "
             f"replicate ({n_boot} resamples) draws the same items for a and b, so the interval is of "
             "the paired difference (two separate DES intervals ignore that both rows share the items' "
             "noise). An interval "
             "that excludes 0 means the two methods' equity differs beyond item-sampling noise "
             "(above 0: a is less fair). The share is the fraction of replicates where DES(a) > DES(b)."),
    ]
    if data.des_differences:
        blocks.append(Table(
            ["task", "a", "b", "DES(a)", "DES(b)", "DES(a) − DES(b) [95% CI]", "share DES(a) > DES(b)",
             "languages"],
            [[d.task, d.a, d.b, _num(d.des_a, 4), _num(d.des_b, 4),
              _num(d.difference, 4) + _ci(d.difference_ci, 4), _num(d.share_a_higher, 3), str(len(d.languages))]
             for d in sorted(data.des_differences, key=lambda d: d.task)],
        ))  # fmt: skip
    if data.des_differences_skipped:
        blocks.append(Para("Not compared: " + "; ".join(data.des_differences_skipped) + "."))
    return blocks
