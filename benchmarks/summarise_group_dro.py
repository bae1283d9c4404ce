"""Issue 15's tables and trade-off plot: bench_group_dro.py's runs beside their study rows.

Reads every <results>/*.json that bench_group_dro.py wrote (one per KD run: held-out KL per family
on SIB-200 dev rows, q for DRO runs) and the study's report (`aetheris study`'s results.json:
FLORES DES with its interval and permutation p, drops per family and language, paired DES
differences), and writes

    <out>/summary.md        per run: held-out KL, FLORES DES [95% CI], permutation p, mean drop,
                            worst and best family, paired DES difference against kd-uniform; then
                            held-out KL, held-out excess CE (bits per byte) and FLORES drop per
                            family, and how well each held-out signal ranks the families' drops
                            (Spearman over families: what a DRO signal must get right)
    <out>/des_vs_mean.png   DES against the mean drop, one point per scored run (with its DES
                            interval): the trade-off the issue asks for, and the η curve when
                            runs at several η exist

A run's study row is `kd-` + its name without `-s0` (dro-loss-s0 -> kd-dro-loss, dro-loss-s0-eta1 ->
kd-dro-loss-eta1, dro-loss-s0-bos -> kd-dro-loss-bos), except uniform-s0 -> kd-uniform; kd-student
and kd-student-bos are the study's own. Runs on rows with the teacher's BOS (`--bos`, names ending
in `-bos`) are their own series, with their own tables and kd-uniform-bos as their baseline: the two
series' teachers saw different text, so their figures do not mix.

    python benchmarks/summarise_group_dro.py [--results benchmarks/results/group_dro]
        [--study benchmarks/results/study-gemma3-270m/report/results.json] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from common import table
from scipy.stats import spearmanr

from aetheris.equity import Interval
from aetheris.report.plots import des_vs_mean

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "group_dro"
STUDY = ROOT / "benchmarks" / "results" / "study-gemma3-270m" / "report" / "results.json"
BASELINE = "kd-uniform"
TASK = "flores_bpb"
Record = dict[str, Any]


SERIES = {"": "Rows without the teacher's BOS (BENCHMARKS §13)", "-bos": "Rows with the teacher's BOS"}


def series(run: str) -> str:
    """"-bos" for a run on rows with the teacher's BOS, "" for the first series."""
    return "-bos" if run.endswith("-bos") else ""


def study_row(run: str) -> str:
    """The study row a bench_group_dro run is scored as."""
    if run.startswith("kd-student"):
        return run
    return "kd-" + run.replace("-s0", "")


def baseline(run: str) -> str:
    """The uniform-KD row a run's paired DES difference is taken against: its own series'."""
    return BASELINE + series(run)


def flores(study: Record, row: str) -> Record | None:
    """The study's FLORES equity entry for `row`, or None when it is not scored."""
    for entry in study.get("equity", []):
        if entry["student"] == row and TASK in entry["tasks"]:
            return entry["tasks"][TASK]
    return None


def paired(study: Record, a: str, b: str) -> Record | None:
    for d in study.get("des_differences", []):
        if d["task"] == TASK and d["a"] == a and d["b"] == b:
            return d
    return None


def mean_drop(f: Record) -> float:
    """The mean drop over the languages of a FLORES equity entry."""
    return statistics.fmean(lang["drop"] for lang in f["languages"])


def fmt(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def run_rows(runs: list[Record], study: Record) -> list[list[object]]:
    rows = []
    for r in runs:
        row = study_row(r["name"])
        f = flores(study, row)
        d = paired(study, row, baseline(r["name"]))
        des = "—" if f is None else f"{f['des']:.4f} [{f['des_ci']['low']:.4f}, {f['des_ci']['high']:.4f}]"
        mean = None if f is None else mean_drop(f)
        drops = {} if f is None else {fam["family"]: fam["drop"] for fam in f["families"]}
        worst = "—" if f is None else f"{f['worst_family']} {drops[f['worst_family']]:+.3f}"
        best = "—" if f is None else f"{f['best_family']} {drops[f['best_family']]:+.3f}"
        diff = "—" if d is None else (f"{d['difference']:+.4f} [{d['difference_ci']['low']:+.4f}, "
                                      f"{d['difference_ci']['high']:+.4f}]")  # fmt: skip
        q = r.get("stage", {}).get("group_dro", {}).get("q")
        top = "—" if not q else ", ".join(f"{g} {v:.3f}" for g, v in sorted(q.items(), key=lambda kv: -kv[1])[:2])
        rows.append([r["name"], row, fmt(r["held_out"]["kl"]), des, fmt(None if f is None else f["permutation_p"], 3),
                     fmt(mean, 3), worst, best, diff, top])  # fmt: skip
    return rows


def family_table(runs: list[Record], values: dict[str, dict[str, float]]) -> str:
    families = sorted({f for v in values.values() for f in v})
    rows = [[r["name"], *(fmt(values[r["name"]].get(f), 3) for f in families)] for r in runs if values[r["name"]]]
    return table(["run", *families], rows) if rows else "(none scored yet)"


def signal_ranks(runs: list[Record], signals: dict[str, dict[str, dict[str, float]]],
                 drops: dict[str, dict[str, float]]) -> str:  # fmt: skip
    """Spearman rho (p) over families between each held-out signal and the FLORES drop, per run."""
    rows = []
    for r in runs:
        cells = []
        for values in signals.values():
            common = sorted(set(values[r["name"]]) & set(drops[r["name"]]))
            if len(common) < 3:
                cells.append("—")
                continue
            rho, p = spearmanr([values[r["name"]][f] for f in common], [drops[r["name"]][f] for f in common])
            cells.append(f"{rho:+.2f} (p {p:.2f}, {len(common)} families)")
        if any(c != "—" for c in cells):
            rows.append([r["name"], *cells])
    return table(["run", *(f"{name} vs drop" for name in signals)], rows) if rows else "(none scored yet)"


def summary(runs: list[Record], study: Record) -> str:
    """One section per series present, each with its own tables."""
    parts = []
    for tag, title in SERIES.items():
        ours = [r for r in runs if series(r["name"]) == tag]
        if ours:
            parts.append(f"## {title}\n\n" + series_summary(ours, study, BASELINE + tag))
    return "\n".join(parts)


def series_summary(runs: list[Record], study: Record, base: str) -> str:
    kl = {r["name"]: {f: v["kl"] for f, v in r["held_out"]["by_family"].items()} for r in runs}
    excess = {r["name"]: {f: v["excess_bits_per_byte"] for f, v in r["held_out"]["by_family"].items()
                          if "excess_bits_per_byte" in v} for r in runs}  # fmt: skip
    drops = {}
    for r in runs:
        f = flores(study, study_row(r["name"]))
        drops[r["name"]] = {} if f is None else {fam["family"]: fam["drop"] for fam in f["families"]}
    head = ["run", "study row", "held-out KL", "FLORES DES [95% CI]", "perm. p", "mean drop", "worst family",
            "best family", f"DES − {base} [95% CI]", "largest q"]  # fmt: skip
    return "\n\n".join([
        table(head, run_rows(runs, study)),
        "Held-out KL per family (SIB-200 dev rows of one language; nats per token):",
        family_table(runs, kl),
        "Held-out excess CE per family (student − teacher CE at the labels, same rows; bits per byte):",
        family_table(runs, excess),
        "FLORES drop per family (student − teacher bits/byte, SIB-200 test):",
        family_table(runs, drops),
        "Does the held-out signal rank the families as their FLORES drops do? (Spearman over families)",
        signal_ranks(runs, {"KL": kl, "excess CE": excess}, drops),
        "Each family's mean q over KD (the share of rows it drew under `sampling`, of the loss under `loss`),"
        " beside its share of the languages (uniform KD draws SIB-200's languages about equally):",
        share_table(runs, study, base),
    ]) + "\n"  # fmt: skip


def share_table(runs: list[Record], study: Record, base: str) -> str:
    """Mean q per family of the DRO runs that recorded it, under a row of the languages' shares."""
    f = flores(study, base)
    with_q = [r for r in runs if r.get("q_mean")]
    if f is None or not with_q:
        return "(no run with q_mean yet)"
    n = sum(len(fam["languages"]) for fam in f["families"])
    langs = {fam["family"]: len(fam["languages"]) / n for fam in f["families"]}
    families = sorted(langs)
    rows = [["languages' share", *(fmt(langs[g], 3) for g in families)]]
    rows += [[r["name"], *(fmt(r["q_mean"].get(g), 3) for g in families)] for r in with_q]
    return table(["run", *families], rows)


def plot(runs: list[Record], study: Record) -> bytes | None:
    """DES against mean drop, one point per scored run, with the DES interval."""
    scored = [(r["name"], f) for r in runs if (f := flores(study, study_row(r["name"]))) is not None]
    if not scored:
        return None
    return des_vs_mean([name for name, _ in scored], [mean_drop(f) for _, f in scored],
                       [f["des"] for _, f in scored], [Interval(**f["des_ci"]) for _, f in scored])  # fmt: skip


def load_runs(results: Path) -> list[Record]:
    """bench_group_dro's records, kd-student first, then uniform runs, then DRO runs, by name."""
    runs = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]

    def rank(r: Record) -> tuple[int, str]:
        name = r["name"]
        return (0 if name.startswith("kd-student") else 1 if name.startswith("uniform") else 2), name

    return sorted(runs, key=rank)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--study", type=Path, default=STUDY, help="aetheris study's report/results.json")
    ap.add_argument("--out", type=Path, default=None, help="default: --results")
    args = ap.parse_args(argv)
    out = args.out or args.results
    runs = load_runs(args.results)
    if not runs:
        raise SystemExit(f"{args.results}: no bench_group_dro.py records")
    study = json.loads(args.study.read_text()) if args.study.exists() else {}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(summary(runs, study), encoding="utf-8")
    png = plot(runs, study)
    if png is not None:
        (out / "des_vs_mean.png").write_bytes(png)
    print((out / "summary.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
