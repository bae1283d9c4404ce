"""Wall time of the full multilingual harness on an embedded teacher, measured per task.

The full harness (XCOPA 11 x 500, MGSM-direct 11 x 250, FLORES bits-per-byte 205 varieties x
1,004 sentences, tool calling 70 x 21) takes many hours on a 2-core CPU, so each task is timed
on a sample of its languages and items and its full wall time is the measured seconds per item
times its item count. `--check LANG` also runs all of one XCOPA language, to compare the
projection with a measured whole.

    PYTHONPATH=src python benchmarks/bench_harness.py [--teacher gemma3-270m] [--items 16]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import machine, table

from aetheris.eval.lm import HFLM
from aetheris.eval.runner import CHUNK_BATCHES, resolve_tasks
from aetheris.paths import shared_data_dir
from aetheris.teacher import load_teacher

# Sample languages per task: different scripts and tokenizer fertilities, so that the mean
# seconds per item is not one script's.
SAMPLE = {
    "xcopa": ["sw", "zh-Hans", "ta"],
    "mgsm_direct": ["sw", "zh-Hans", "th"],
    "flores_bpb": ["sw", "zh-Hans", "ta", "ar"],
    "tools": ["sw", "zh-Hans", "hi"],
}


def score_all(task, lm: HFLM, items: list) -> float:
    """Seconds to score `items` the way the runner does (chunks of batch_size x CHUNK_BATCHES)."""
    t0 = time.perf_counter()
    chunk = lm.batch_size * CHUNK_BATCHES
    for start in range(0, len(items), chunk):
        task.score(lm, items[start : start + chunk])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="gemma3-270m")
    ap.add_argument("--tasks", default="xcopa,mgsm_direct,flores_bpb,tools")
    ap.add_argument("--items", type=int, default=16, help="items per sample language")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--check", default="", help="an XCOPA language to also run in full")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="JSON results")
    args = ap.parse_args()
    data_dir = args.data_dir or shared_data_dir()

    t0 = time.perf_counter()
    teacher = load_teacher(args.teacher)
    load_s = time.perf_counter() - t0
    lm = HFLM(teacher.model, teacher.tokenizer, batch_size=args.batch_size)
    report = {"machine": machine(), "teacher": args.teacher, "load_seconds": load_s, "tasks": {}}
    rows = []
    total = 0.0
    for task in resolve_tasks(args.tasks.split(",")):
        langs = task.languages()
        n_full = sum(len(task.load(lang, data_dir, None)) for lang in langs)
        sample = [lang for lang in SAMPLE.get(task.name, langs[:2]) if lang in langs]
        items = [it for lang in sample for it in task.load(lang, data_dir, args.items)]
        score_all(task, lm, items[:1])  # first call: thread pools, allocator
        seconds = score_all(task, lm, items)
        per_item = seconds / len(items)
        projected = per_item * n_full
        total += projected
        report["tasks"][task.name] = {
            "sample_languages": sample,
            "sample_items": len(items),
            "sample_seconds": seconds,
            "seconds_per_item": per_item,
            "full_languages": len(langs),
            "full_items": n_full,
            "projected_seconds": projected,
        }
        rows.append([task.name, len(langs), n_full, f"{len(sample)} x {args.items}", per_item, projected / 3600])
        print(rows[-1], flush=True)
    report["projected_total_hours"] = total / 3600
    if args.check:
        from aetheris.eval.tasks.xcopa import XCOPA

        task = XCOPA()
        items = task.load(args.check, data_dir, None)
        seconds = score_all(task, lm, items)
        per_item = report["tasks"].get("xcopa", {}).get("seconds_per_item")
        report["check"] = {"task": "xcopa", "lang": args.check, "items": len(items), "seconds": seconds,
                           "projected_seconds": per_item * len(items) if per_item else None}  # fmt: skip
    print(f"\n{machine()}; teacher {args.teacher} (load {load_s:.1f}s), batch {args.batch_size}\n")
    print(table(["task", "languages", "items", "sample", "s/item", "projected hours"], rows))
    print(f"\nprojected full harness: {total / 3600:.1f} h on this machine")
    if args.check:
        print(f"check: {json.dumps(report['check'])}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
