"""Benchmark 2: decoding latency and cache size after long prompts.

A 24-block Aetheris ("SM" * 12; experts of the MLP's width, and `split` experts of a quarter
of it) vs a 12-layer LlamaForCausalLM and a 12-layer transformers
Mamba2ForCausalLM, all at SmolLM2-135M's width (576, 9 query / 3 KV heads, head_dim 64, vocab
49152). After a prompt of N tokens, the median time of one decoding step and the bytes the cache
holds. Aetheris and Mamba2 really read the prompt (in pieces of 2048 tokens through the cache);
the Llama KV cache is filled with random keys/values of the right shape, since attention costs
the same whatever the values are and a real 16k CPU prefill would take minutes.

The four models are timed side by side: `--rounds` rounds, each running `--steps` decoding steps
of every model in turn, so a load that comes and goes on a shared machine lands on all of them;
a model's figure is the median over all its steps (the first step of each round is a warm-up)
and the ratios are of those medians. The machine, CPU flags, torch version, threads, date and
command are printed and written with the figures to a small JSON file.

`--dtype bfloat16` runs all four in bf16 (weights and caches alike): a token step reads every
weight once, so halving the bytes tests how far decoding is bound by weight bandwidth.

    python benchmarks/bench_decode.py [--lengths 512 2048 8192 16384] [--steps 16] [--rounds 5]
                                      [--threads N] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from common import machine, table
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Mamba2Config, Mamba2ForCausalLM

from aetheris import AetherisConfig, AetherisForCausalLM
from aetheris.precision import cpu_summary

VOCAB, HIDDEN, HEADS, KV, HEAD_DIM, FFN = 49152, 576, 9, 3, 64, 1536
MODELS = ("aetheris", "split", "mamba2", "llama")


def cache_bytes(cache) -> int:
    total = 0
    for layer in cache.layers:
        tensors = [getattr(layer, "keys", None), getattr(layer, "values", None)]
        tensors += list(getattr(layer, "conv_states", {}).values()) + list(getattr(layer, "recurrent_states", {}).values())
        total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    return total


def decode_steps(model, cache, steps: int) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds of this process) of each of `steps` greedy decoding steps after the
    first (a warm-up). On a shared machine CPU time leaves out the time the process waited its turn."""
    tok = torch.tensor([[1]])
    wall, cpu = [], []
    for _ in range(steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        out = model(tok, use_cache=True, logits_to_keep=1, cache=cache)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        tok = out.logits[:, -1:].argmax(-1)
    return wall[1:], cpu[1:]


def prefill(model, cache, n: int, piece: int = 2048) -> None:
    g = torch.Generator().manual_seed(0)
    for start in range(0, n, piece):
        ids = torch.randint(0, VOCAB, (1, min(piece, n - start)), generator=g)
        model(ids, use_cache=True, logits_to_keep=1, cache=cache)


def build_models(dtype: torch.dtype = torch.float32) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    shape = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_attention_heads=HEADS, num_key_value_heads=KV)
    models = {
        "aetheris": AetherisForCausalLM(AetherisConfig(**shape, moe_intermediate_size=FFN)).eval(),
        # `split` experts (MoEfication of the same MLP): a quarter of the width each
        "split": AetherisForCausalLM(AetherisConfig(**shape, moe_intermediate_size=FFN // 4)).eval(),
        "mamba2": Mamba2ForCausalLM(Mamba2Config(vocab_size=VOCAB, hidden_size=HIDDEN, num_heads=HEADS,
                                                 head_dim=HEAD_DIM, expand=1, state_size=HEAD_DIM, n_groups=KV,
                                                 num_hidden_layers=12, tie_word_embeddings=True)).eval(),
        "llama": LlamaForCausalLM(LlamaConfig(**shape, intermediate_size=FFN, num_hidden_layers=12,
                                              max_position_embeddings=32768, tie_word_embeddings=True)).eval(),
    }  # fmt: skip
    return {name: model.to(dtype) for name, model in models.items()}


def filled_cache(name: str, model, n: int) -> tuple[DynamicCache, float]:
    """The cache after an n-token prompt, and the seconds the prefill took (0 for the Llama's random KV)."""
    cache = DynamicCache(config=model.config)
    if name == "llama":
        for i in range(12):
            kv = torch.randn(2, 1, KV, n, HEAD_DIM, dtype=model.dtype)
            cache.update(kv[0], kv[1], i)
        return cache, 0.0
    t0 = time.perf_counter()
    prefill(model, cache, n)
    return cache, time.perf_counter() - t0


def measure(models: dict, n: int, steps: int, rounds: int) -> dict[str, float]:
    caches, r = {}, {}
    for name, model in models.items():
        caches[name], r[f"{name}_prefill_s"] = filled_cache(name, model, n)
        r[f"{name}_bytes"] = cache_bytes(caches[name])
    wall, cpu = {name: [] for name in models}, {name: [] for name in models}
    for _ in range(rounds):  # interleaved: every model sees the same spells of load
        for name, model in models.items():
            w, c = decode_steps(model, caches[name], steps)
            wall[name] += w
            cpu[name] += c
    for name in models:
        r[f"{name}_step_s"] = statistics.median(wall[name])
        r[f"{name}_cpu_s"] = statistics.median(cpu[name])
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192, 16384])
    ap.add_argument("--steps", type=int, default=16, help="timed decoding steps per model per round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds over the four models")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default: results/decode_<date>.json)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="every model's weights and cache")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python " + " ".join(sys.argv)
    info = {"machine": machine(), "cpu": cpu_summary(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": command, "steps": args.steps, "rounds": args.rounds, "dtype": args.dtype}  # fmt: skip
    for key, value in info.items():
        print(f"{key}: {value}", flush=True)
    models = build_models(getattr(torch, args.dtype))
    rows, results = [], {}
    with torch.no_grad():
        for n in args.lengths:
            r = results[n] = measure(models, n, args.steps, args.rounds)
            ms = [r[f"{m}_step_s"] * 1e3 for m in MODELS]
            rows.append([n, *ms, r["llama_step_s"] / r["aetheris_step_s"], r["llama_step_s"] / r["split_step_s"],
                         r["mamba2_step_s"] / r["aetheris_step_s"], r["mamba2_step_s"] / r["split_step_s"],
                         r["aetheris_bytes"], r["mamba2_bytes"], r["llama_bytes"]])  # fmt: skip
            print(rows[-1], flush=True)
    cpu_rows = [[n, *(results[n][f"{m}_cpu_s"] * 1e3 for m in MODELS),
                 *(results[n][f"{a}_cpu_s"] / results[n][f"{b}_cpu_s"]
                   for a, b in (("llama", "aetheris"), ("llama", "split"), ("mamba2", "aetheris"), ("mamba2", "split")))]
                for n in args.lengths]  # fmt: skip
    print("CPU time of the process per step (ms), the same steps:")
    print(table(["prompt", "Aetheris", "Aetheris split", "Mamba2", "Llama", "Llama/Aetheris (x)",
                 "Llama/Aetheris split (x)", "Mamba2/Aetheris (x)", "Mamba2/Aetheris split (x)"], cpu_rows))  # fmt: skip
    first, last = results[args.lengths[0]], results[args.lengths[-1]]
    print("Wall-clock ms per step (medians), and ratios of them:")
    print(table(["prompt", "Aetheris ms/token", "Aetheris split ms/token", "Mamba2 ms/token", "Llama ms/token",
                 "Llama/Aetheris (x)", "Llama/Aetheris split (x)", "Mamba2/Aetheris (x)", "Mamba2/Aetheris split (x)",
                 "Aetheris cache B", "Mamba2 cache B", "Llama cache B"], rows))  # fmt: skip
    print(f"Aetheris latency {args.lengths[-1]}/{args.lengths[0]}: "
          f"{last['aetheris_step_s'] / first['aetheris_step_s']:.3f}x")
    out = args.out or Path(__file__).parent / "results" / f"decode_{datetime.date.today().isoformat()}.json"
    out.write_text(json.dumps({"bench": "decode", **info, "results": results}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
