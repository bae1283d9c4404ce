"""Benchmark 3: the MoE block (4 experts, top-1, dropless) vs one dense SwiGLU of an expert's size.

Top-1 routing sends each token through one expert, so the arithmetic equals the dense MLP's; what
this measures is the cost of routing, sorting and scattering. Forward and forward+backward.

    python benchmarks/bench_moe.py [--tokens 4096]
"""

from __future__ import annotations

import argparse
import json

import torch
from common import machine, median_seconds, table

from aetheris import AetherisConfig
from aetheris.model.moe import MoE, SwiGLU


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=576)
    ap.add_argument("--ffn", type=int, default=1536)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = AetherisConfig(hidden_size=args.hidden, layout="M", num_attention_heads=9, num_key_value_heads=3,
                         moe_intermediate_size=args.ffn)
    moe, dense = MoE(cfg, 0), SwiGLU(args.hidden, args.ffn)
    x = torch.randn(1, args.tokens, args.hidden)
    rows, results = [], {}
    for mode in ("forward", "forward+backward"):
        def run(mod, mode=mode):
            if mode == "forward":
                with torch.no_grad():
                    mod(x)
            else:
                out = mod(x.requires_grad_(True))
                (out[0] if isinstance(out, tuple) else out).sum().backward()
        # interleave the two so that load on the machine hits both alike
        t_moe, t_dense = [], []
        for _ in range(3):
            t_moe.append(median_seconds(lambda: run(moe), repeat=args.repeat))
            t_dense.append(median_seconds(lambda: run(dense), repeat=args.repeat))
        m, d = min(t_moe), min(t_dense)
        results[mode] = {"moe_s": m, "dense_s": d, "ratio": m / d}
        rows.append([mode, m * 1e3, d * 1e3, m / d])
    print(machine())
    print(table(["pass", "MoE (ms)", "dense SwiGLU (ms)", "MoE/dense (x)"], rows))
    print(json.dumps({"bench": "moe", "tokens": args.tokens, "results": results}))


if __name__ == "__main__":
    main()
