"""The arbitrage recipe: prompts -> every serving pool model answers -> checks -> arbiter -> SFT rows.

Output: one JSONL row per prompt that has a winner, in the SFT loader's format (`lang`,
`messages` ending with the winning assistant turn, `tools`), plus `arbitrage`: the winner, the
arbiter and every candidate with its scores and check results. Prompts where no candidate
passes go to `<out stem>.rejected.jsonl` with the same record. Each prompt's row is written by
one append + fsync; a run that is killed leaves at most a partial last line, which the next run
cuts off, and the prompts already in either file are not redone. At the end the win share per
model per language is printed and written to `<out stem>.summary.json` (atomically).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aetheris.arbitrage.arbiters import Arbiter, ArbiterConfig, build_arbiter
from aetheris.arbitrage.checks import Checker, CheckRecord, assistant_message
from aetheris.arbitrage.config import RunSettings
from aetheris.arbitrage.pool import Candidate, Member
from aetheris.arbitrage.prompts import Prompt, load_prompts


def sidecar(out: Path, suffix: str) -> Path:
    return out.with_name(f"{out.stem}.{suffix}")


def decide(prompt: Prompt, candidates: Sequence[Candidate], scores: Sequence[dict[str, Any]],
           checks: Sequence[CheckRecord], arbiter: str) -> dict[str, Any]:  # fmt: skip
    """The output row for one prompt: the best-scoring candidate among those passing the checks."""
    passing = [i for i, c in enumerate(checks) if c.passed]
    key = lambda i: scores[i]["score"] if scores[i].get("score") is not None else -math.inf
    best = max(passing, key=key) if passing else None
    record = {
        "prompt_id": prompt.id, "kind": prompt.kind, "arbiter": arbiter,
        "winner": candidates[best].model if best is not None else None,
        "why": (f"highest {arbiter} score among {len(passing)} of {len(candidates)} candidates passing the checks"
                if best is not None else "no candidate passed the checks"),
        "candidates": [{"model": c.model, "reply": c.text, **scores[i], "checks": checks[i].as_dict()}
                       for i, c in enumerate(candidates)],
    }  # fmt: skip
    row: dict[str, Any] = {"lang": prompt.lang}
    if best is not None:
        row["messages"] = [*prompt.messages, assistant_message(checks[best], candidates[best].text)]
    else:
        row["messages"] = list(prompt.messages)
    if prompt.tools:
        row["tools"] = list(prompt.tools)
    row["arbitrage"] = record
    return row


def done_ids(path: Path) -> set[str]:
    """Prompt ids already written; a partial last line (a killed run) is cut off first."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)
    ids = set()
    for line in data[:end].decode("utf-8").splitlines():
        if line.strip():
            ids.add(json.loads(line)["arbitrage"]["prompt_id"])
    return ids


def append_row(path: Path, row: dict[str, Any]) -> None:
    line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def run_arbitrage(settings: RunSettings, arbiter_cfg: ArbiterConfig, out: str | Path,
                  pool: Sequence[Member] | None = None, progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Arbitrate every prompt not yet in `out`; returns the summary (also written beside `out`).

    `pool`: already loaded members (tests); by default the config's models are loaded.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rejected = sidecar(out, "rejected.jsonl")
    prompts = load_prompts(settings.prompts)
    done = done_ids(out) | done_ids(rejected)
    todo = [p for p in prompts if p.id not in done]
    if todo:
        members = list(pool) if pool is not None else [Member.load(m, settings.generation.batch_size)
                                                       for m in settings.pool]  # fmt: skip
        arbiter = build_arbiter(arbiter_cfg)
        arbiter.prepare(members)
        _arbitrate(todo, members, arbiter, Checker(settings.checks), settings, out, rejected, progress)
    summary = summarise(out, rejected, [m.label for m in settings.pool])
    summary.update({"prompts": len(prompts), "resumed_done": len(done & {p.id for p in prompts}),
                    "arbitrated_now": len(todo), "arbiter": arbiter_cfg.name})  # fmt: skip
    path = sidecar(out, "summary.json")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return summary


def _arbitrate(todo: list[Prompt], pool: Sequence[Member], arbiter: Arbiter, checker: Checker,
               settings: RunSettings, out: Path, rejected: Path, progress: bool) -> None:  # fmt: skip
    from aetheris.progress import Bar

    gen = settings.generation
    with Bar(disable=not progress, transient=False) as bar:
        task = bar.add_task("arbitrage", total=len(todo))
        for start in range(0, len(todo), gen.batch_size):
            chunk = todo[start : start + gen.batch_size]
            candidates: dict[str, list[Candidate]] = defaultdict(list)
            for member in pool:
                mine = [p for p in chunk if member in arbiter.generators(p, pool)]
                for p, replies in zip(mine, member.generate(mine, gen) if mine else [], strict=True):
                    candidates[p.id] += [Candidate(member.label, r) for r in replies]
            batch = [(p, candidates[p.id]) for p in chunk]
            scores = arbiter.score(batch, pool)
            for (p, cands), sc in zip(batch, scores, strict=True):
                row = decide(p, cands, sc, [checker(p, c.text) for c in cands], arbiter.name)
                append_row(out if row["arbitrage"]["winner"] else rejected, row)
                bar.advance(task)


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def summarise(out: Path, rejected: Path, labels: Sequence[str]) -> dict[str, Any]:
    """Wins per model per language (shares of that language's prompts), rejections, LID skips."""
    wins: dict[str, Counter[str]] = defaultdict(Counter)
    lid: Counter[str] = Counter()
    for row in _rows(out) + _rows(rejected):
        rec = row["arbitrage"]
        wins[row["lang"]][rec["winner"] or "rejected"] += 1
        for c in rec["candidates"]:
            status = (c["checks"].get("lid") or {}).get("status", "off")
            lid[status] += 1
    languages = {}
    for lang in sorted(wins):
        n = sum(wins[lang].values())
        languages[lang] = {"n": n, "wins": dict(wins[lang]),
                           "share": {k: wins[lang][k] / n for k in [*labels, "rejected"] if wins[lang][k]}}  # fmt: skip
    total = Counter()
    for c in wins.values():
        total.update(c)
    n = sum(total.values())
    from aetheris.arbitrage.lid import committed_mapping

    return {"output": str(out), "rows": sum(v for k, v in total.items() if k != "rejected"),
            "rejected": total["rejected"], "overall": {k: v / n for k, v in total.items()} if n else {},
            "languages": languages, "lid_status_of_candidates": dict(lid),
            "lid_lacking_languages": committed_mapping()["lacking"]}  # fmt: skip


def print_summary(summary: dict[str, Any], labels: Sequence[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"arbitrage ({summary['arbiter']}): win share per language")
    cols = [*labels, "rejected"]
    for c in ["lang", "n", *cols]:
        table.add_column(c, justify="right")
    for lang, s in summary["languages"].items():
        table.add_row(lang, str(s["n"]), *[f"{100 * s['share'].get(c, 0):.0f}%" for c in cols])
    table.add_row("all", str(summary["rows"] + summary["rejected"]),
                  *[f"{100 * summary['overall'].get(c, 0):.0f}%" for c in cols])  # fmt: skip
    Console(stderr=True).print(table)
