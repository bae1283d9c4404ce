"""The student head's three products in fp32 and bf16 (issue 13 §1's table), with the CPU flags.

One KD step of a 262k-vocabulary student is mostly these: logits = h @ Wᵀ, and in the backward
dH = dlogits @ W and dW = dlogitsᵀ @ h. This measures them alone, fp32 against bf16 inputs (and
against CPU autocast, which is what training uses), interleaved over rounds so that a noisy
machine hits both dtypes alike. Compare the ratios with a KD step's (bench_kd.py --precision) to
see how much of a step the products are.

    python benchmarks/bench_head_matmul.py [--tokens 512] [--hidden 640] [--vocab 262144] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import machine

from aetheris.precision import cpu_summary


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up: oneDNN picks and caches its kernel on the first call
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def products(tokens: int, hidden: int, vocab: int) -> dict[str, dict]:
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(tokens, hidden, generator=g), torch.randn(vocab, hidden, generator=g)
    dy = torch.randn(tokens, vocab, generator=g)
    hb, wb, dyb = h.bfloat16(), w.bfloat16(), dy.bfloat16()

    def autocast_logits():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            F.linear(h, w)

    return {
        "logits": {"float32": lambda: F.linear(h, w), "bfloat16": lambda: F.linear(hb, wb),
                   "autocast": autocast_logits},
        "grad_hidden": {"float32": lambda: dy @ w, "bfloat16": lambda: dyb @ wb},
        "grad_head": {"float32": lambda: dy.t() @ h, "bfloat16": lambda: dyb.t() @ hb},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=640)
    ap.add_argument("--vocab", type=int, default=262_144)
    ap.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per product per round")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    print(machine(), "|", cpu_summary(), flush=True)
    flop = 2 * args.tokens * args.hidden * args.vocab
    results: dict = {
        "machine": machine(),
        "cpu": cpu_summary(),
        "shape": vars(args) | {"out": None},
        "runs": {},
    }
    print("| threads | product | dtype | ms (median) | GFLOP/s | vs fp32 (x) |\n|---|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        prods = products(args.tokens, args.hidden, args.vocab)
        times: dict[str, dict[str, list[float]]] = {p: {d: [] for d in fns} for p, fns in prods.items()}
        for r in range(args.rounds):
            for p, fns in prods.items():
                order = list(fns) if r % 2 == 0 else list(reversed(fns))  # neither dtype always first
                for d in order:
                    times[p][d] += timed(fns[d], args.repeats)
        for p, by_dtype in times.items():
            base = statistics.median(by_dtype["float32"])
            for d, ts in by_dtype.items():
                med = statistics.median(ts)
                print(
                    f"| {threads} | {p} | {d} | {med * 1e3:.0f} | {flop / med / 1e9:.0f} | {base / med:.2f} |"
                )
        results["runs"][str(threads)] = times
    if args.out:
        args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
