"""Tool calling before and after SFT (issue 16 §1): one model folder (or embedded name) on a fixed
subset of the held-out `tools` split, written as an aetheris.eval.results file, plus a per
language x category and failure-category summary printed.

    python benchmarks/bench_sft_tools.py gemma3-270m --out benchmarks/results/sft_tools/before
    python benchmarks/bench_sft_tools.py /tmp/sfttools/sft/model --out benchmarks/results/sft_tools/after
    python benchmarks/bench_sft_tools.py compare BEFORE.json AFTER.json -o benchmarks/results/sft_tools/summary.json

`compare` puts two results files side by side on the languages both hold, and re-reads each
stored reply with the current `turn_stops` (a run made before a stop was added is re-scored from
its stored replies, whose first 500 characters are kept; the rows that change are counted).

A model without a chat template gets aetheris.data.chat.FALLBACK_CHAT_TEMPLATE, the one the SFT
recipe trains and saves it with, so both sides see the same prompts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import torch

from aetheris.data.chat import ensure_chat_template
from aetheris.eval.lm import HFLM
from aetheris.eval.runner import evaluate_model, plan_languages
from aetheris.eval.tasks.tools import ToolsTask

# Tiny Aya's five regions: Europe (en, fr), Africa (sw, am), South Asia (hi), Asia-Pacific (ja, zh-Hans), West Asia (ar).
LANGS = ["en", "fr", "sw", "am", "hi", "ja", "zh-Hans", "ar"]
# Two templates per category: simple e01-e08, multiple e09-e14, parallel e15-e18, irrelevance e19-e21.
IDS = ["e01", "e05", "e09", "e12", "e15", "e17", "e19", "e21"]


def rescored(path: Path, langs: list[str] | None = None) -> tuple[dict[str, list[dict]], dict]:
    """Per language, the rows of a results file re-checked with the current stops."""
    from aetheris.data.chat import FALLBACK_CHAT_TEMPLATE
    from aetheris.eval.lm import cut_at_stop
    from aetheris.toolcall.checker import check
    from aetheris.toolcall.prompting import turn_stops

    class _Tok:  # every model here is prompted through the fallback template
        chat_template = FALLBACK_CHAT_TEMPLATE

        @staticmethod
        def apply_chat_template(messages, **kw):
            from transformers.utils.chat_template_utils import render_jinja_template

            return render_jinja_template(conversations=[messages], chat_template=FALLBACK_CHAT_TEMPLATE, **kw)[0][0]

    stop = turn_stops(_Tok())
    data = json.loads(path.read_text())["tasks"]["tools"]["languages"]
    items = {(it.lang, it.id): it for it in ToolsTask()._items}
    by_id = defaultdict(list)
    for it in items.values():
        by_id[it.id].append(it)
    out, changed, long_no_stop = {}, 0, 0
    for lang, block in data.items():
        if langs is not None and lang not in langs:
            continue
        rows = []
        for r in block["items"]:
            reply = cut_at_stop(r["output"], stop)
            long_no_stop += reply == r["output"] and len(r["output"]) >= 500
            res = check(items[(lang, r["id"])], reply, translations=by_id[r["id"]])
            new = {**r, "score": float(res.passed), "category": res.category}
            changed += new["score"] != r["score"] or new["category"] != r["category"]
            rows.append(new)
        out[lang] = rows
    return out, {"rows_changed_by_rescoring": changed, "replies_cut_at_500_chars_without_a_stop": long_no_stop}


def summary(rows_by_lang: dict[str, list[dict]]) -> dict:
    cells, fails = defaultdict(list), defaultdict(Counter)
    for lang, rows in rows_by_lang.items():
        for r in rows:
            cells[(lang, r["kind"])].append(r["score"])
            cells[("all", r["kind"])].append(r["score"])
            cells[(lang, "all")].append(r["score"])
            cells[("all", "all")].append(r["score"])
            if r["category"]:
                fails[r["kind"]][r["category"]] += 1
    return {"acc": {f"{a}/{k}": sum(v) / len(v) for (a, k), v in sorted(cells.items())},
            "failures": {k: dict(c) for k, c in fails.items()}}


def compare(before: Path, after: Path, out: Path) -> None:
    common = sorted(set(json.loads(before.read_text())["tasks"]["tools"]["languages"])
                    & set(json.loads(after.read_text())["tasks"]["tools"]["languages"]))  # fmt: skip
    report = {"languages": common}
    for name, path in (("before", before), ("after", after)):
        rows, notes = rescored(path, common)
        report[name] = {"results": str(path), **notes, **summary(rows)}
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    kinds = ["simple", "multiple", "parallel", "irrelevance", "all"]
    print("| lang | " + " | ".join(kinds) + " |\n|---|" + "---|" * len(kinds))
    for lang in [*common, "all"]:
        cells = [f"{report['before']['acc'][f'{lang}/{k}']:.2f} → {report['after']['acc'][f'{lang}/{k}']:.2f}"
                 for k in kinds]  # fmt: skip
        print(f"| {lang} | " + " | ".join(cells) + " |")
    for name in ("before", "after"):
        print(name, json.dumps(report[name]["failures"], ensure_ascii=False))


def main() -> None:
    if sys.argv[1:2] == ["compare"]:
        c = argparse.ArgumentParser()
        c.add_argument("before", type=Path)
        c.add_argument("after", type=Path)
        c.add_argument("-o", type=Path, required=True)
        a = c.parse_args(sys.argv[2:])
        compare(a.before, a.after, a.o)
        return
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--langs", default=",".join(LANGS))
    p.add_argument("--ids", default=",".join(IDS))
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    langs, ids = a.langs.split(","), set(a.ids.split(","))
    base = ToolsTask()
    task = ToolsTask([it for it in base._items if it.lang in langs and it.id in ids])
    lm = HFLM.load(a.model, batch_size=a.batch_size, dtype=a.dtype)
    ensure_chat_template(lm.tokenizer)
    result = evaluate_model(lm, a.model, [task], plan_languages([task], langs), a.out,
                            settings={"dtype": a.dtype, "ids": sorted(ids)})
    print(result["path"])
    print(json.dumps(summary(rescored(Path(result["path"]))[0]), indent=1))


if __name__ == "__main__":
    main()
