"""The report's figures, drawn with matplotlib's Agg canvas and returned as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from aetheris.equity import EquityReport, Interval
from aetheris.fertility import ScriptFertility

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _errors(values: Sequence[float], cis: Sequence[Interval | None]) -> np.ndarray | None:
    """Asymmetric error bars (2, n) from intervals; None when any is missing."""
    if any(ci is None for ci in cis):
        return None
    low = [max(v - ci.low, 0.0) for v, ci in zip(values, cis, strict=True)]
    high = [max(ci.high - v, 0.0) for v, ci in zip(values, cis, strict=True)]
    return np.array([low, high])


def family_drops(reports: Sequence[EquityReport], task: str) -> bytes:
    """Grouped bars: mean drop per family for each student, with bootstrap 95% intervals."""
    families = sorted({f.family for r in reports if task in r.tasks for f in r.tasks[task].families})
    fig = Figure(figsize=(max(6.0, 0.9 * len(families) + 2), 4.2))
    ax = fig.add_subplot()
    width = 0.8 / max(len(reports), 1)
    x = np.arange(len(families))
    palette = _method_colors([r.student for r in reports])  # a study may compare 15 models
    for k, rep in enumerate(reports):
        if task not in rep.tasks:
            continue
        by_fam = {f.family: f for f in rep.tasks[task].families}
        vals = [by_fam[f].drop if f in by_fam else np.nan for f in families]
        cis = [by_fam[f].drop_ci if f in by_fam else None for f in families]
        ax.bar(x + (k - (len(reports) - 1) / 2) * width, vals, width, yerr=_errors(vals, cis),
               capsize=3, color=palette[rep.student], label=rep.student)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, families, rotation=30, ha="right")
    metric = next(r.tasks[task].metric for r in reports if task in r.tasks)
    ax.set_ylabel(f"drop in {metric} (positive = worse)")
    ax.set_title(f"{task}: mean drop per family, 95% bootstrap intervals")
    ax.legend(frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def teacher_vs_student(reports: Sequence[EquityReport], task: str) -> bytes:
    """Per-language scores: teacher on x, each student on y; the diagonal is no change."""
    fig = Figure(figsize=(5.6, 5.2))
    ax = fig.add_subplot()
    everything: list[float] = []
    # The teacher's score is the same for every student, so one language's points share an x:
    # a thin vertical line ties them together.
    per_lang: dict[str, list[tuple[float, float]]] = {}
    for rep in reports:
        for r in rep.tasks[task].languages if task in rep.tasks else []:
            per_lang.setdefault(r.language, []).append((r.teacher, r.student))
    for points in per_lang.values():
        if len(points) > 1:
            ys = [y for _, y in points]
            ax.vlines(points[0][0], min(ys), max(ys), color="lightgrey", linewidth=1, zorder=0)
    for k, rep in enumerate(reports):
        if task not in rep.tasks:
            continue
        rows = rep.tasks[task].languages
        t = [r.teacher for r in rows]
        s = [r.student for r in rows]
        everything += t + s
        ax.scatter(t, s, color=COLORS[k % len(COLORS)], label=rep.student, s=28, alpha=0.85)
        if k == 0:
            for r in rows:
                ax.annotate(r.language, (r.teacher, r.student), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    lo, hi = min(everything), max(everything)
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", linestyle="--", linewidth=1)
    metric = next(r.tasks[task].metric for r in reports if task in r.tasks)
    hib = next(r.tasks[task].higher_is_better for r in reports if task in r.tasks)
    ax.set_xlabel(f"teacher {metric}")
    ax.set_ylabel(f"student {metric}")
    side = "below" if hib else "above"
    ax.set_title(f"{task}: per language ({side} the diagonal = worse)")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return _png(fig)


def des_per_model(reports: Sequence[EquityReport], tasks: Sequence[str]) -> bytes:
    """Degradation Equity Score of each student, one panel per task, with 95% intervals."""
    fig = Figure(figsize=(max(5.0, 3.2 * len(tasks)), 3.8), layout="constrained")
    for j, task in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), j + 1)
        reps = [r for r in reports if task in r.tasks]
        vals = [r.tasks[task].des for r in reps]
        cis = [r.tasks[task].des_ci for r in reps]
        colors = [COLORS[reports.index(r) % len(COLORS)] for r in reps]
        ax.bar(range(len(reps)), vals, yerr=_errors(vals, cis), capsize=4, color=colors)
        ax.set_xticks(range(len(reps)), [r.student for r in reps], rotation=20, ha="right")
        ax.set_title(task)
        ax.grid(axis="y", alpha=0.3)
        if j == 0:
            ax.set_ylabel("DES (variance of family drops)")
    fig.suptitle("Degradation Equity Score per model (lower = fairer)")
    return _png(fig)


def fertility_by_script(rows: Sequence[ScriptFertility]) -> bytes:
    """Grouped bars: tokens per character per script, one colour per tokenizer."""
    scripts = sorted({r.script for r in rows})
    tokenizers = list(dict.fromkeys(r.tokenizer for r in rows))
    value = {(r.tokenizer, r.script): r.tokens_per_char for r in rows}
    fig = Figure(figsize=(max(6.0, 0.8 * len(scripts) + 2), 4.0))
    ax = fig.add_subplot()
    width = 0.8 / max(len(tokenizers), 1)
    x = np.arange(len(scripts))
    for k, tok in enumerate(tokenizers):
        vals = [value.get((tok, s), np.nan) for s in scripts]
        ax.bar(x + (k - (len(tokenizers) - 1) / 2) * width, vals, width, label=tok,
               color=COLORS[k % len(COLORS)])
    ax.set_xticks(x, scripts)
    ax.set_ylabel("tokens per character (FLORES)")
    ax.set_title("Tokenizer fertility by script (mean over languages)")
    ax.legend(frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def group_weights(records: Sequence[dict], title: str = "group DRO weights q over KD") -> bytes:
    """q per group over training (one line per group) from a KD run's metrics.jsonl records
    (`q/<group>` keys, logged by kd.weighting: group_dro); the dotted line is the uniform 1/G."""
    rows = [r for r in records if any(k.startswith("q/") for k in r)]
    if not rows:
        raise ValueError("no q/<group> metrics in these records: was the run made with kd.weighting: group_dro?")
    groups = sorted({k[2:] for r in rows for k in r if k.startswith("q/")})
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot()
    for k, g in enumerate(groups):
        pts = [(r["step"], r[f"q/{g}"]) for r in rows if f"q/{g}" in r]
        ax.plot(*zip(*pts), color=COLORS[k % len(COLORS)], linestyle="-" if k < len(COLORS) else "--", label=g)
    ax.axhline(1 / len(groups), color="black", linewidth=0.8, linestyle=":", label="uniform 1/G")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("q (group weight)")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize="small", ncol=2 if len(groups) > 8 else 1)
    ax.grid(alpha=0.3)
    return _png(fig)


def des_vs_mean(names: Sequence[str], mean_drops: Sequence[float], des: Sequence[float],
                cis: Sequence[Interval | None]) -> bytes:  # fmt: skip
    """DES against the mean drop, one labelled point per model with its DES interval: the
    fairness-quality trade-off of equity-aware KD (and its η curve)."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    ax.errorbar(mean_drops, des, yerr=_errors(des, cis), fmt="o", capsize=3)
    for name, x, y in zip(names, mean_drops, des, strict=True):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("mean drop over languages (student − teacher)")
    ax.set_ylabel("DES (variance of family drops; lower is fairer)")
    ax.set_title("Equity-aware KD: fairness against mean quality")
    ax.grid(alpha=0.3)
    return _png(fig)


def _method_colors(methods: Sequence[str]) -> dict[str, str]:
    """One colour per method, in order of first appearance (more than 8 methods: tab20)."""
    unique = list(dict.fromkeys(methods))
    if len(unique) <= len(COLORS):
        return {m: COLORS[k] for k, m in enumerate(unique)}
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return {m: cmap(k % 20) for k, m in enumerate(unique)}


def frontier(names: Sequence[str], methods: Sequence[str], quality: Sequence[float],
             size: Sequence[float], speed: Sequence[float | None], metric: str, task: str) -> bytes:  # fmt: skip
    """Two panels: mean quality vs bytes on disk, and vs decode tokens/s; one colour per method."""
    colors = _method_colors(methods)
    fig = Figure(figsize=(11.0, 4.4), layout="constrained")
    for j, (xs, label) in enumerate(((size, "bytes on disk (MB)"), (speed, "decode tokens/s"))):
        ax = fig.add_subplot(1, 2, j + 1)
        shown = set()
        for name, method, q, x in zip(names, methods, quality, xs, strict=True):
            if x is None or q is None:
                continue
            x = x / 1e6 if j == 0 else x
            ax.scatter([x], [q], color=colors[method], s=36, label=None if method in shown else method)
            shown.add(method)
            ax.annotate(name, (x, q), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if j == 0:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"mean {metric} over languages")
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend(frameon=False, fontsize=8)
    fig.suptitle(f"{task}: quality vs size and vs decode speed")
    return _png(fig)


def drop_vs(reports: Sequence[EquityReport], methods: Sequence[str], task: str,
            x_of: dict[str, float], xlabel: str, jitter: float = 0.0) -> bytes:  # fmt: skip
    """Per-language drop against a language property (fertility, tier); one colour per method."""
    colors = _method_colors(methods)
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    shown = set()
    for rep, method in zip(reports, methods, strict=True):
        rows = [r for r in rep.tasks[task].languages if r.language in x_of] if task in rep.tasks else []
        if not rows:
            continue
        xs = np.array([x_of[r.language] for r in rows], dtype=float)
        xs = xs + rng.uniform(-jitter, jitter, len(xs)) if jitter else xs
        ax.scatter(xs, [r.drop for r in rows], color=colors[method], s=18, alpha=0.75,
                   label=None if method in shown else method)
        shown.add(method)
    ax.axhline(0, color="black", linewidth=0.8)
    metric = next((r.tasks[task].metric for r in reports if task in r.tasks), "score")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"drop in {metric} (positive = worse)")
    ax.set_title(f"{task}: drop per language vs {xlabel}")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)
