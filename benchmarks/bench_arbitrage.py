"""Multilingual arbitrage against one teacher, at the same prompts (issue 16 §3).

1. `aetheris arbitrage CONFIG` (default configs/arbitrage.yaml: gemma3-270m and SmolLM2-135M
   Instruct answer every prompt; the likelihood arbiter keeps one reply among those passing the
   checks) writes the arbitrage set.
2. The single-teacher set: for every prompt where `--teacher` (a pool label) passed the checks,
   that teacher's own reply, read from the candidates the arbitrage rows record (no second
   generation). The arbitrage set is cut to the same prompts, so the two sets have the same
   prompts and the same number of examples, and differ only in who answered: the comparison the
   issue asks for. How often the teacher's own reply won is recorded (on those prompts the two
   sets are identical).
3. `--base` (default gemma3-270m; a student's folder for the student) is SFT'd on each set with
   the same recipe and number of passes (bench_region_merge's).
4. Both SFT models are scored on tool calling and FLORES in `--langs-per-region` languages of every
   Tiny Aya region, and the arbitrage model is compared with the single-teacher one: the drop per
   language and per region with 95% bootstrap intervals (positive = arbitrage worse).

Every step resumes (arbitrage appends rows, SFT checkpoints, evaluation caches items).

    python benchmarks/bench_arbitrage.py [--config configs/arbitrage.yaml] [--teacher gemma3-270m]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from bench_region_merge import (
    add_sft_eval_args,
    eval_languages,
    evaluate,
    sft,
    start,
    tables,
    tools_by_category,
)
from common import table, write_json

from aetheris.arbitrage.checks import CheckRecord, assistant_message
from aetheris.arbitrage.config import load_settings
from aetheris.arbitrage.run import run_arbitrage
from aetheris.equity import compare
from aetheris.report.plots import family_drops
from aetheris.toolcall.checker import CallParseError, parse_calls

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "arbitrage"


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def teacher_reply(row: dict[str, Any], teacher: str) -> dict[str, Any] | None:
    """The SFT row with `teacher`'s own reply to this row's prompt, or None when it failed the checks."""
    cand = next((c for c in row["arbitrage"]["candidates"] if c["model"] == teacher), None)
    if cand is None or not cand["checks"]["passed"]:
        return None
    calls = []
    if row.get("tools"):
        try:
            calls = parse_calls(cand["reply"])  # parsed as JSON, never executed
        except CallParseError:
            calls = []
    message = assistant_message(CheckRecord(True, calls=calls), cand["reply"])
    return {**row, "messages": [*row["messages"][:-1], message], "arbitrage": {**row["arbitrage"], "winner": teacher}}


def split_sets(rows: list[dict[str, Any]], teacher: str) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """(single-teacher rows, arbitrage rows on the same prompts, counts)."""
    single, same = [], []
    for row in rows:
        mine = teacher_reply(row, teacher)
        if mine is not None:
            single.append(mine)
            same.append(row)
    winners = Counter(r["arbitrage"]["winner"] for r in same)
    stats = {"arbitrage_rows": len(rows), "same_prompts": len(same), "teacher": teacher,
             "winners_on_same_prompts": dict(winners),
             "teacher_share_on_same_prompts": winners[teacher] / max(len(same), 1)}  # fmt: skip
    return single, same, stats


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
    return path


def by_language(rep: Any, task: str) -> list[list[object]]:
    """Per language: single-teacher score, arbitrage score, drop [95% CI]."""
    rows = []
    for lang in rep.tasks[task].languages if task in rep.tasks else []:
        ci = "" if lang.drop_ci is None else f" [{lang.drop_ci.low:+.3f}, {lang.drop_ci.high:+.3f}]"
        rows.append([lang.language, f"{lang.teacher:.3f}", f"{lang.student:.3f}", f"{lang.drop:+.3f}{ci}"])
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_sft_eval_args(ap)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "arbitrage.yaml")
    ap.add_argument("--teacher", default="gemma3-270m", help="the pool label of the single teacher")
    ap.add_argument("--root", type=Path, default=ROOT / "runs" / "arbitrage-bench")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    header = start(args)
    settings, arbiter = load_settings(args.config)
    labels = [m.label for m in settings.pool]
    if args.teacher not in labels:
        raise SystemExit(f"--teacher {args.teacher!r}: not a pool label of {args.config} ({', '.join(labels)})")

    data = args.root / "arbitrage" / "data.jsonl"
    summary = run_arbitrage(settings, arbiter, data)  # resumes: prompts already answered are skipped
    single, same, stats = split_sets(read_rows(data), args.teacher)
    if not single:
        raise SystemExit(f"{data}: {args.teacher} passed the checks on no prompt; nothing to compare")
    sets = {"single": write_rows(args.root / "single.jsonl", single),
            "arbitrage": write_rows(args.root / "arbitrage-same.jsonl", same)}  # fmt: skip
    models = {name: sft(f"sft-{name}", args.base, None, args, [str(path)]) for name, path in sets.items()}

    langs = [code for codes in eval_languages(args.langs_per_region).values() for code in codes]
    evals = {name: evaluate(f"sft-{name}", folder, langs, args) for name, folder in models.items()}
    rep = compare(evals["single"], evals["arbitrage"], level="region", n_boot=args.n_boot, n_perm=1000)
    write_json(args.results / "summary.json", {
        **header, "config": str(args.config), "sets": stats,
        "win_share_by_language": summary.get("languages"),
        "tools_by_category": {name: tools_by_category(path) for name, path in evals.items()},
        "arbitrage_vs_single": rep.model_dump(mode="json"),
    })  # fmt: skip
    parts = [f"{stats['same_prompts']} prompts where {args.teacher} passed the checks (of {stats['arbitrage_rows']} "
             f"arbitrage rows); its own reply won {stats['teacher_share_on_same_prompts']:.0%} of them.",
             tables({"arbitrage": rep}, sorted({f.family for t in rep.tasks.values() for f in t.families}), "single")]  # fmt: skip
    for task in rep.tasks:
        parts += [f"{task} per language (single = SFT on {args.teacher}'s replies; drop = arbitrage − single, "
                  "positive = arbitrage worse):", table(["language", "single", "arbitrage", "drop [95% CI]"],
                                                        by_language(rep, task))]  # fmt: skip
        (args.results / f"{task}_arbitrage_vs_single.png").write_bytes(family_drops([rep], task))
    text = "\n\n".join(parts)
    (args.results / "summary.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
