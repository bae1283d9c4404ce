"""Benchmark 1: SSM mixer forward, batch 1, at the shapes of SmolLM2-135M's attention.

Aetheris's mixer with the `chunked` scan vs the same mixer with the `reference` scan vs
transformers' Mamba2Mixer (its PyTorch path) with the same width, heads and state size. The
mixers share their projections (in_proj 576 -> 1545, out_proj 576 -> 576), so a second table
times the scans alone: `ssd_chunked` vs `ssd_reference` vs transformers' `mamba2_chunk_scan`.

    python benchmarks/bench_scan.py [--lengths 512 2048 8192] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from common import machine, median_seconds, table
from transformers import Mamba2Config
from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer, mamba2_chunk_scan

from aetheris import AetherisConfig
from aetheris.model.mixer import SSMMixer
from aetheris.model.ssd import repeat_groups, ssd_chunked, ssd_reference

HIDDEN, HEADS, KV_HEADS, HEAD_DIM = 576, 9, 3, 64


def aetheris_mixer(impl: str, chunk: int) -> SSMMixer:
    cfg = AetherisConfig(hidden_size=HIDDEN, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                         layout="S", ssm_impl=impl, ssm_chunk_size=chunk)  # fmt: skip
    mixer = SSMMixer(cfg, 0)
    mixer.reset_ssm_parameters()
    return mixer


def hf_mixer() -> Mamba2Mixer:
    cfg = Mamba2Config(hidden_size=HIDDEN, num_heads=HEADS, head_dim=HEAD_DIM, expand=1, state_size=HEAD_DIM,
                       n_groups=KV_HEADS, num_hidden_layers=1, vocab_size=16)  # fmt: skip
    return Mamba2Mixer(cfg, layer_idx=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    impls = {"chunked": aetheris_mixer("chunked", args.chunk), "reference": aetheris_mixer("reference", args.chunk),
             "transformers Mamba2Mixer": hf_mixer()}  # fmt: skip
    if args.device == "cuda":
        impls["cuda (mamba-ssm)"] = aetheris_mixer("cuda", args.chunk)
    rows, results = [], {}
    with torch.no_grad():
        for L in args.lengths:
            u = torch.randn(1, L, HIDDEN, device=args.device)
            # Interleaved: every round times each implementation once, so load on the machine hits all
            # alike; the reference is slow and runs once.
            samples: dict[str, list[float]] = {name: [] for name in impls}
            for mod in impls.values():
                mod.to(args.device)(u)  # warm-up
            for r in range(args.repeat):
                for name, mod in impls.items():
                    if name == "reference" and r > 0:
                        continue
                    try:
                        samples[name].append(median_seconds(lambda mod=mod, u=u: mod(u), repeat=1, warmup=0))
                    except Exception as e:  # a missing kernel is reported, not fatal
                        print(f"{name} at L={L}: {type(e).__name__}: {e}")
            t = {name: statistics.median(v) for name, v in samples.items() if v}
            results[L] = t
            hf = t.get("transformers Mamba2Mixer")
            rows.append([L] + [t.get(n, float("nan")) * 1e3 for n in impls]
                        + [hf / t["chunked"] if hf else float("nan"), t["reference"] / t["chunked"]])  # fmt: skip
    print(machine())
    print(table(["L"] + [f"{n} (ms)" for n in impls] + ["vs transformers (x)", "vs reference (x)"], rows))
    scan_rows, scan_results = scans_alone(args)
    print(table(["L", "ssd_chunked (ms)", "ssd_reference (ms)", "transformers mamba2_chunk_scan (ms)",
                 "vs transformers (x)", "vs reference (x)"], scan_rows))  # fmt: skip
    print(json.dumps({"bench": "scan", "device": args.device, "mixer_seconds": results, "scan_seconds": scan_results}))


def scans_alone(args) -> tuple[list[list], dict]:
    """The scan functions on the mixer's shapes: x at 3 groups, B at 3, C at 9 heads, d_state 64."""
    rows, results = [], {}
    g = torch.Generator().manual_seed(0)
    hf_chunk = Mamba2Config().chunk_size  # transformers' default for its mixer
    for L in args.lengths:
        x = torch.randn(1, L, KV_HEADS, HEAD_DIM, generator=g).to(args.device)
        dt = (torch.rand(1, L, HEADS, generator=g) * 0.1).to(args.device)
        A = -torch.rand(HEADS, generator=g).to(args.device)
        B = torch.randn(1, L, KV_HEADS, HEAD_DIM, generator=g).to(args.device)
        C = torch.randn(1, L, HEADS, HEAD_DIM, generator=g).to(args.device)
        D = torch.randn(HEADS, generator=g).to(args.device)
        # transformers' scan wants x per head and B, C with one group count: give it per-head copies
        xh, Bh = repeat_groups(x, HEADS), repeat_groups(B, HEADS)
        fns = {
            "chunked": lambda a=(x, dt, A, B, C, D): ssd_chunked(*a, chunk_size=args.chunk),
            "reference": lambda a=(x, dt, A, B, C, D): ssd_reference(*a),
            "hf": lambda a=(xh, dt, A, Bh, C), D=D: mamba2_chunk_scan(*a, hf_chunk, D=D),
        }
        samples: dict[str, list[float]] = {k: [] for k in fns}
        with torch.no_grad():
            for r in range(args.repeat):
                for k, fn in fns.items():
                    if k == "reference" and r > 0:
                        continue
                    samples[k].append(median_seconds(fn, repeat=1, warmup=1 if r == 0 else 0))
        t = {k: statistics.median(v) for k, v in samples.items()}
        results[L] = t
        rows.append([L, t["chunked"] * 1e3, t["reference"] * 1e3, t["hf"] * 1e3,
                     t["hf"] / t["chunked"], t["reference"] / t["chunked"]])  # fmt: skip
    return rows, results


if __name__ == "__main__":
    main()
