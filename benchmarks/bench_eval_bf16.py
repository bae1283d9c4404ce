"""FLORES bits-per-byte items/s in fp32 vs bf16 on one model, and how far bf16 moves bits/byte.

bf16 here is what `aetheris eval --dtype bfloat16` (or `--dtype native` on a CPU/GPU with native
bf16) does: the weights cast to bf16, the log-softmax over fp32 logits. Rounds interleave the two
dtypes (order reversed every other round); items/s is the median over rounds.

    cd benchmarks && python bench_eval_bf16.py [--model gemma3-270m] [--items 16] [--batch-size 8]
        [--lang sw] [--rounds 3] [--out results/eval_bf16.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
from pathlib import Path

import torch
from bench_eval import byte_tokenizer, timed, tiny_model
from common import machine, table

from aetheris.eval.lm import HFLM
from aetheris.eval.tasks.flores import FloresBPB
from aetheris.precision import bf16_support, cpu_summary

DTYPES = ("float32", "bfloat16")


def load(name: str):
    if name == "tiny":
        tok = byte_tokenizer()
        return tiny_model(len(tok)), tok, "tiny Llama 256x4, byte tokenizer"
    from aetheris.teacher import load_teacher

    loaded = load_teacher(name, dtype="float32")
    return loaded.model, loaded.tokenizer, name


def bpb(rows: list[dict]) -> float:
    return sum(r["bits"] for r in rows) / sum(r["bytes"] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3-270m", help="an embedded teacher name, or tiny")
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lang", default="sw")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--data-dir",
        default=os.environ.get("AETHERIS_DATA_DIR")
        or str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"),
    )
    ap.add_argument("--out", help="write the JSON results here")
    args = ap.parse_args()
    model, tok, name = load(args.model)
    lms = {"float32": HFLM(model, tok), "bfloat16": HFLM(copy.deepcopy(model).to(torch.bfloat16), tok)}
    task = FloresBPB()
    items = task.load(args.lang, Path(args.data_dir), args.items)
    for lm in lms.values():
        task.score(lm, items[:1])  # thread pools and allocator
    rates: dict[str, list[float]] = {d: [] for d in DTYPES}
    rows: dict[str, list[dict]] = {}
    for rnd in range(args.rounds):
        for d in DTYPES if rnd % 2 == 0 else DTYPES[::-1]:
            rate, rows[d] = timed(task, lms[d], items, args.batch_size)
            rates[d].append(rate)
            print(f"round {rnd} {d}: {rate:.3f} items/s", flush=True)
    med = {d: statistics.median(r) for d, r in rates.items()}
    score = {d: bpb(rows[d]) for d in DTYPES}
    per_item = max(abs(a["score"] - b["score"]) for a, b in zip(rows["float32"], rows["bfloat16"], strict=True))
    native, why = bf16_support("cpu")
    report = {"bench": "eval_bf16", "machine": machine(), "cpu": cpu_summary(), "bf16_native": native,
              "bf16_reason": why, "model": name, "parameters": model.num_parameters(), "lang": args.lang,
              "items": len(items), "batch_size": args.batch_size, "rounds": args.rounds, "items_per_s": rates,
              "items_per_s_median": med, "speedup": med["bfloat16"] / med["float32"], "bits_per_byte": score,
              "bpb_diff": score["bfloat16"] - score["float32"],
              "bpb_rel_diff": (score["bfloat16"] - score["float32"]) / score["float32"],
              "max_item_bpb_diff": per_item}  # fmt: skip
    print()
    print(machine())
    print(cpu_summary(), f"({why})")
    print(table(["dtype", "items/s (median)", "bits/byte"], [[d, med[d], score[d]] for d in DTYPES]))
    print(f"bf16 vs fp32: {report['speedup']:.2f}x items/s (AMX target >= 2x); bits/byte "
          f"{report['bpb_diff']:+.4f} ({100 * report['bpb_rel_diff']:+.3f}%), largest per item {per_item:.4f}")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
