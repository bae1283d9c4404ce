"""Benchmark 2: decoding latency and cache size after long prompts.

A 24-block Aetheris ("SM" * 12; experts of the MLP's width, and `split` experts of a quarter
of it) vs a 12-layer LlamaForCausalLM and a 12-layer transformers
Mamba2ForCausalLM, all at SmolLM2-135M's width (576, 9 query / 3 KV heads, head_dim 64, vocab
49152). After a prompt of N tokens, the median time of one decoding step and the bytes the cache
holds. Aetheris and Mamba2 really read the prompt (in pieces of 2048 tokens through the cache);
the Llama KV cache is filled with random keys/values of the right shape, since attention costs
the same whatever the values are and a real 16k CPU prefill would take minutes.

    python benchmarks/bench_decode.py [--lengths 512 2048 8192 16384] [--steps 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from common import machine, table
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Mamba2Config, Mamba2ForCausalLM

from aetheris import AetherisConfig, AetherisForCausalLM

VOCAB, HIDDEN, HEADS, KV, HEAD_DIM, FFN = 49152, 576, 9, 3, 64, 1536


def cache_bytes(cache) -> int:
    total = 0
    for layer in cache.layers:
        tensors = [getattr(layer, "keys", None), getattr(layer, "values", None)]
        tensors += list(getattr(layer, "conv_states", {}).values()) + list(getattr(layer, "recurrent_states", {}).values())
        total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    return total


def decode_step_seconds(model, cache, steps: int) -> float:
    tok = torch.tensor([[1]])
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        out = model(tok, use_cache=True, logits_to_keep=1, cache=cache)
        times.append(time.perf_counter() - t0)
        tok = out.logits[:, -1:].argmax(-1)
    return statistics.median(times[1:])


def prefill(model, cache, n: int, piece: int = 2048) -> None:
    g = torch.Generator().manual_seed(0)
    for start in range(0, n, piece):
        ids = torch.randint(0, VOCAB, (1, min(piece, n - start)), generator=g)
        model(ids, use_cache=True, logits_to_keep=1, cache=cache)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192, 16384])
    ap.add_argument("--steps", type=int, default=16)
    args = ap.parse_args()
    torch.manual_seed(0)
    aetheris = AetherisForCausalLM(AetherisConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_attention_heads=HEADS,
                                                  num_key_value_heads=KV, moe_intermediate_size=FFN)).eval()
    # `split` experts (MoEfication of the same MLP): a quarter of the width each
    split = AetherisForCausalLM(AetherisConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_attention_heads=HEADS,
                                               num_key_value_heads=KV, moe_intermediate_size=FFN // 4)).eval()
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_attention_heads=HEADS,
                                         num_key_value_heads=KV, intermediate_size=FFN, num_hidden_layers=12,
                                         max_position_embeddings=32768, tie_word_embeddings=True)).eval()
    mamba2 = Mamba2ForCausalLM(Mamba2Config(vocab_size=VOCAB, hidden_size=HIDDEN, num_heads=HEADS, head_dim=HEAD_DIM,
                                            expand=1, state_size=HEAD_DIM, n_groups=KV, num_hidden_layers=12,
                                            tie_word_embeddings=True)).eval()
    rows, results = [], {}
    with torch.no_grad():
        for n in args.lengths:
            r = {}
            cache = DynamicCache(config=aetheris.config)
            t0 = time.perf_counter()
            prefill(aetheris, cache, n)
            r["aetheris_prefill_s"] = time.perf_counter() - t0
            r["aetheris_bytes"] = cache_bytes(cache)
            r["aetheris_step_s"] = decode_step_seconds(aetheris, cache, args.steps)

            cache = DynamicCache(config=split.config)
            prefill(split, cache, n)
            r["split_step_s"] = decode_step_seconds(split, cache, args.steps)

            cache = DynamicCache(config=mamba2.config)
            prefill(mamba2, cache, n)
            r["mamba2_bytes"] = cache_bytes(cache)
            r["mamba2_step_s"] = decode_step_seconds(mamba2, cache, args.steps)

            cache = DynamicCache(config=llama.config)
            for i in range(12):
                cache.update(torch.randn(1, KV, n, HEAD_DIM), torch.randn(1, KV, n, HEAD_DIM), i)
            r["llama_bytes"] = cache_bytes(cache)
            r["llama_step_s"] = decode_step_seconds(llama, cache, args.steps)
            results[n] = r
            rows.append([n, r["aetheris_step_s"] * 1e3, r["split_step_s"] * 1e3, r["mamba2_step_s"] * 1e3,
                         r["llama_step_s"] * 1e3, r["llama_step_s"] / r["aetheris_step_s"],
                         r["mamba2_step_s"] / r["aetheris_step_s"], r["mamba2_step_s"] / r["split_step_s"],
                         r["aetheris_bytes"], r["mamba2_bytes"], r["llama_bytes"]])
            print(rows[-1], flush=True)
    first, last = results[args.lengths[0]], results[args.lengths[-1]]
    print(machine())
    print(table(["prompt", "Aetheris ms/token", "Aetheris split ms/token", "Mamba2 ms/token", "Llama ms/token",
                 "Llama/Aetheris (x)", "Mamba2/Aetheris (x)", "Mamba2/Aetheris split (x)", "Aetheris cache B",
                 "Mamba2 cache B", "Llama cache B"], rows))
    print(f"Aetheris latency {args.lengths[-1]}/{args.lengths[0]}: "
          f"{last['aetheris_step_s'] / first['aetheris_step_s']:.3f}x")
    print(json.dumps({"bench": "decode", "results": results}))


if __name__ == "__main__":
    main()
