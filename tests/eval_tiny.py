"""Shared by the test_eval_* files: the data folder and a tiny random Llama with a real
byte-level BPE tokenizer (built here: no tokenizer can be downloaded offline)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


def data_dir() -> Path:
    path = Path(
        os.environ.get("AETHERIS_DATA_DIR") or Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
    if not (path / "xcopa").is_dir():
        pytest.skip(f"benchmark data not found at {path} (set AETHERIS_DATA_DIR)")
    return path


def training_text(root: Path) -> list[str]:
    lines = []
    for p in sorted((root / "xcopa" / "data").glob("*/val.*.jsonl")):
        lines += p.read_text(encoding="utf-8").splitlines()[:30]
    for p in sorted((root / "mgsm").glob("mgsm_*.tsv")):
        lines += p.read_text(encoding="utf-8").splitlines()[:10]
    return lines


def tiny_tokenizer(texts: list[str], vocab_size: int = 512):
    """Byte-level BPE that prepends <s> like Llama's tokenizer (exercises BOS handling)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_llama(tokenizer, hidden: int = 64, layers: int = 2, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.3,  # peaked logits: decisions far from float-rounding ties
    )
    return LlamaForCausalLM(cfg).eval()


def save_tiny_model(path: Path, root: Path) -> Path:
    tok = tiny_tokenizer(training_text(root))
    model = tiny_llama(tok)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def save_embedded_teacher(path: Path, layers: int = 2, hidden: int = 64) -> Path:
    """A tiny tied Llama with a BPE tokenizer trained on the embedded corpus, saved to `path`:
    the teacher folder the distillation tests name in their configs."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from aetheris.data.sources import embedded_corpus

    tok = tiny_tokenizer([e.text for e in embedded_corpus()][:200], vocab_size=400)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=2 * hidden, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, tie_word_embeddings=True)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def save_tiny_pool(tmp_path_factory) -> dict[str, Path]:
    """Two tiny chat-corpus Llamas with different tokenizers (per-byte scores are what compare
    across them): the arbitrage pool of the tests."""
    from aetheris.data.sources import embedded_corpus

    texts = [m["content"] for ex in embedded_corpus("chat") for m in ex.messages if m.get("content")]
    out = {}
    for name, vocab, seed in (("tiny-a", 400, 0), ("tiny-b", 600, 1)):
        path = tmp_path_factory.mktemp(name)
        tok = tiny_tokenizer(texts, vocab_size=vocab)
        tiny_llama(tok, seed=seed).save_pretrained(path)
        tok.save_pretrained(path)
        out[name] = path
    return out
