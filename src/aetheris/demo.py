"""`make demo`: distil the embedded Gemma 3 270M into a small Aetheris student on the built-in
70-language corpus (init -> align -> kd -> sft), measure teacher and student with the
multilingual harness, and write the equity report. Offline, CPU, within about 20 minutes.

    python -m aetheris.demo [CONFIG] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from aetheris.distill.config import load_config
from aetheris.distill.pipeline import run_stages
from aetheris.eval.runner import run as run_eval
from aetheris.paths import shared_data_dir
from aetheris.report.cli import run_report

# Which languages the demo measures: one or two per family, all five Tiny Aya regions.
EVAL = {
    "flores_bpb": (["en", "fr", "ru", "hi", "ta", "sw", "yo", "am", "ar", "tr", "zh-Hans", "ja"], 24),
    "xcopa": (["sw", "ta", "tr", "vi", "id", "zh-Hans"], 30),
    "tools": (["en", "sw", "ar", "ja"], 2),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="configs/demo.yaml")
    ap.add_argument("--out", default=None, help="report folder (default: <output_dir>/report)")
    args = ap.parse_args()
    started = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the stages report through logging
    cfg = load_config(args.config)
    student = run_stages(cfg, "all", resume=True)
    results_dir = Path(cfg.output_dir) / "eval"
    data_dir = shared_data_dir()
    merged: dict[str, dict] = {}
    for task, (langs, limit) in EVAL.items():  # each task its own languages and item limit
        for res in run_eval([cfg.teacher.name, str(student)], [task], results_dir / task, langs=langs,
                            data_dir=data_dir, limit=limit, batch_size=8,
                            max_new_tokens=96 if task == "tools" else None):  # fmt: skip
            res.pop("path", None), res.pop("seconds", None)
            merged.setdefault(res["model"], {**res, "tasks": {}})["tasks"].update(res["tasks"])
    paths = []
    for name, res in zip(
        ("teacher", "student"), (merged[cfg.teacher.name], merged[str(student)]), strict=True
    ):
        res["model_name"] = cfg.teacher.name if name == "teacher" else f"student of {cfg.teacher.name}"
        paths.append(results_dir / f"{name}.json")
        paths[-1].write_text(json.dumps(res, ensure_ascii=False, indent=1), encoding="utf-8")
    teacher_file = paths[0]
    out = Path(args.out) if args.out else Path(cfg.output_dir) / "report"
    run_report(paths, out, teacher=teacher_file, level="family",
               tokenizer=[], data_dir=data_dir, n_boot=500, n_perm=2000, seed=0)  # fmt: skip
    print(f"\ndemo done in {(time.perf_counter() - started) / 60:.1f} min")
    print(f"student: {student}\nreport:  {out / 'report.html'} (and report.md)")


if __name__ == "__main__":
    main()
