"""Prefill and decode tokens/s of a loaded model on this machine, and its size facts.

Prefill: best-of-`repeats` time of a greedy generate of one token after a `prompt_tokens` prompt.
Decode: (new_tokens - 1) steps over the extra time a `new_tokens` generate takes (min_new_tokens
= max, so an early end-of-text cannot shorten it). `generate` is the one path every model family
and the Aetheris student share, so the figures compare like with like.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import torch

from aetheris.study.config import SpeedSettings


def machine() -> str:
    from aetheris.precision import cpu_summary

    return f"{platform.node()}; {cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def _best_generate(model: Any, ids: torch.Tensor, new: int, repeats: int, pad: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                       max_new_tokens=new, min_new_tokens=new, pad_token_id=pad)  # fmt: skip
        best = min(best, time.perf_counter() - start)
    return best


@torch.inference_mode()
def measure_speed(model: Any, settings: SpeedSettings, pad_id: int = 0) -> dict[str, float]:
    vocab = model.get_input_embeddings().num_embeddings
    gen = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    ids = torch.randint(3, vocab, (1, settings.prompt_tokens), generator=gen).to(device)
    _best_generate(model, ids, 2, 1, pad_id)  # warm-up: first-call allocation and dispatch
    one = _best_generate(model, ids, 1, settings.repeats, pad_id)
    many = _best_generate(model, ids, settings.new_tokens, settings.repeats, pad_id)
    decode = (settings.new_tokens - 1) / max(many - one, 1e-9)
    return {"prefill_tokens_per_s": settings.prompt_tokens / one, "decode_tokens_per_s": decode,
            "prompt_tokens": settings.prompt_tokens, "new_tokens": settings.new_tokens}  # fmt: skip


def size_facts(model: Any, source: str) -> dict[str, float]:
    """Bytes of the weight files (the compression record's own figures for compressed folders)
    and parameters of the loaded model; bits per weight = 8 · bytes / parameters."""
    from aetheris.compress import read_record
    from aetheris.compress.api import logical_counts
    from aetheris.teacher.load import model_location

    try:
        rec = read_record(source)
        return {"bytes_on_disk": rec.bytes_on_disk, "parameters": rec.parameters,
                "nonzero_parameters": rec.nonzero_parameters, "bits_per_weight": rec.bits_per_weight}  # fmt: skip
    except (FileNotFoundError, NotADirectoryError, ValueError):
        pass
    folder = Path(model_location(source))
    weights = sum(f.stat().st_size for f in folder.glob("*.safetensors")) if folder.is_dir() else 0
    params, nonzero = logical_counts(model)
    return {"bytes_on_disk": weights, "parameters": params, "nonzero_parameters": nonzero,
            "bits_per_weight": 8 * weights / max(params, 1)}  # fmt: skip
