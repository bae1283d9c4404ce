"""Tiny models and a real tokenizer shared by the test_compress_* files."""

from __future__ import annotations

from functools import lru_cache

import torch
from tiny_teachers import ARCHS, tiny_model

from aetheris import AetherisConfig, AetherisForCausalLM

MODELS = [*ARCHS, "aetheris"]
# Calibration small enough for 2 shared cores; the methods' code paths are the same at any size.
FAST = {"calibration_rows": 4, "calibration_seq_len": 32}


@lru_cache(maxsize=1)
def tokenizer():
    """Byte-level BPE trained on the embedded corpus (all 70 languages): merges in many scripts."""
    from eval_tiny import tiny_tokenizer

    from aetheris.data.sources import embedded_corpus

    return tiny_tokenizer([e.text for e in embedded_corpus("text")], vocab_size=600)


def student(seed: int = 0, layout: str = "SMAM") -> AetherisForCausalLM:
    torch.manual_seed(seed)
    cfg = AetherisConfig(vocab_size=len(tokenizer()), hidden_size=64, layout=layout, num_attention_heads=4,
                         num_key_value_heads=2, moe_intermediate_size=64, ssm_chunk_size=16,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
    return AetherisForCausalLM(cfg).eval()


def model(kind: str, seed: int = 0):
    if kind == "aetheris":
        return student(seed)
    return tiny_model(kind, seed=seed, vocab_size=len(tokenizer()))


def block_linears(m) -> dict[str, torch.nn.Linear]:
    """The prunable / quantisable linear layers of every block, as "block.name"."""
    from aetheris.compress.prune import decoder_blocks, prunable_linears

    return {
        f"{i}.{n}": lin for i, b in enumerate(decoder_blocks(m)) for n, lin in prunable_linears(b).items()
    }


def sample_ids(n: int = 2, length: int = 12) -> torch.Tensor:
    text = ["Habari ya asubuhi, rafiki yangu.", "The weather is nice today in Paris."][:n]
    return tokenizer()(text, return_tensors="pt", padding=True).input_ids[:, :length]
