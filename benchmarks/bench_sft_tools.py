"""Tool calling before and after SFT (issue 16 §1): one model folder (or embedded name) on a fixed
subset of the held-out `tools` split, written as an aetheris.eval.results file, plus a per
language x category and failure-category summary printed.

    python benchmarks/bench_sft_tools.py gemma3-270m --out benchmarks/results/sft_tools/before
    python benchmarks/bench_sft_tools.py /tmp/sfttools/sft/model --out benchmarks/results/sft_tools/after

A model without a chat template gets aetheris.data.chat.FALLBACK_CHAT_TEMPLATE, the one the SFT
recipe trains and saves it with, so both sides see the same prompts.
"""

from __future__ import annotations

import argparse
import json
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


def summary(path: Path) -> dict:
    data = json.loads(path.read_text())["tasks"]["tools"]["languages"]
    cells, fails = defaultdict(list), defaultdict(Counter)
    for lang, block in data.items():
        for r in block["items"]:
            cells[(lang, r["kind"])].append(r["score"])
            cells[("all", r["kind"])].append(r["score"])
            cells[(lang, "all")].append(r["score"])
            cells[("all", "all")].append(r["score"])
            if r["category"]:
                fails[r["kind"]][r["category"]] += 1
    return {"acc": {f"{a}/{k}": sum(v) / len(v) for (a, k), v in sorted(cells.items())},
            "failures": {k: dict(c) for k, c in fails.items()}}


def main() -> None:
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
    s = summary(Path(result["path"]))
    (a.out / "summary.json").write_text(json.dumps(s, indent=1))
    print(json.dumps(s, indent=1))


if __name__ == "__main__":
    main()
