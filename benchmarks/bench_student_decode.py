"""Decode ms/token and cache bytes of distilled students beside their teacher (issue 13 §2-3), in
one run: the same machine, thread count and dtype for every model.

bench_hybrid.py times a student once, right after building it, often on a busy machine; this
re-times finished student folders (e.g. the study's best student) on a quiet one. Per dtype, the
teacher and then each student, at every `--lengths` context (bench_hybrid's `decode`: the
student reads its context for real, the teacher's KV cache is filled at the right shapes).
Printed and written: ms/token, x teacher (below 1 is faster), cache MB, and each model's
16k/512 ratio (flat in context: the pure-SSM target is <= 1.25x).

    python bench_student_decode.py ../runs/.../kd [...] --dtypes float32 bfloat16 --threads 1 \\
        --out results/student_decode.json
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch
from bench_hybrid import decode
from common import machine, table, write_json
from transformers import AutoModelForCausalLM

from aetheris.precision import cpu_summary
from aetheris.teacher.load import load_teacher


def time_models(teacher: str, students: dict[str, Path], dtype: str, lengths: list[int], steps: int) -> dict:
    """{model: {length: {ms_per_token, cache_bytes}}} for the teacher and each student."""
    t = load_teacher(teacher, dtype=dtype).model.eval()
    out = {"teacher": {n: decode(t, n, steps, real_prefill=False) for n in lengths}}
    del t
    for name, folder in students.items():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
        out[name] = {n: decode(model, n, steps, real_prefill=True) for n in lengths}
        del model
    return out


def report(results: dict, lengths: list[int]) -> str:
    """One table per dtype: ms/token (x teacher), cache MB, last/first length ratio."""
    parts = []
    for dtype, models in results.items():
        teacher = models["teacher"]
        rows = []
        for name, by_n in models.items():
            ms = [by_n[n]["ms_per_token"] for n in lengths]
            rows.append([name, *(f"{m:.2f} ({m / teacher[n]['ms_per_token']:.2f}x)" for m, n in zip(ms, lengths)),
                         *(f"{by_n[n]['cache_bytes'] / 1e6:.1f}" for n in lengths), f"{ms[-1] / ms[0]:.2f}"])  # fmt: skip
        header = ["model", *(f"{n} ms/token (x teacher)" for n in lengths), *(f"{n} cache MB" for n in lengths),
                  f"{lengths[-1]}/{lengths[0]}"]  # fmt: skip
        parts.append(f"{dtype}:\n" + table(header, rows))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("students", nargs="+", type=Path, help="student model folders (e.g. a run's kd/)")
    ap.add_argument("--names", nargs="+", default=None, help="a label per student (default: the folder paths)")
    ap.add_argument("--teacher", default="gemma3-270m")
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192, 16384])
    ap.add_argument("--steps", type=int, default=8, help="decoding steps timed per length (median)")
    ap.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=1, help="one thread: the safe setting on a shared 2-core VM (§2b)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    names = args.names or [str(p) for p in args.students]
    if len(names) != len(args.students):
        print(f"error: --names gives {len(names)} labels for {len(args.students)} students", file=sys.stderr)
        sys.exit(2)
    missing = [str(p) for p in args.students if not (p / "config.json").exists()]
    if missing:
        print(f"error: no model folder (config.json) at {', '.join(missing)}", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(args.threads)
    header = {"machine": machine(), "cpu": cpu_summary(), "date": datetime.datetime.now(datetime.UTC).isoformat(),
              "command": " ".join(sys.argv), "threads": args.threads, "steps": args.steps,
              "students": dict(zip(names, map(str, args.students)))}  # fmt: skip
    print(header["machine"], "|", header["cpu"], flush=True)
    students = dict(zip(names, args.students))
    results = {d: time_models(args.teacher, students, d, args.lengths, args.steps) for d in args.dtypes}
    write_json(args.out, {**header, "results": results})
    print(report(results, args.lengths))


if __name__ == "__main__":
    main()
