"""Vocabulary trimming: keep the tokens the calibration languages use; rewrite tokenizer and embeddings.

Tokens are counted per language over every calibration text of that language, so a language's
choice does not depend on how much text it has. `min_count`: keep a token seen at least that often
in some language. `vocab_size`: keep that many, taking tokens in order of their best per-language
rank (each language's most frequent token first, then each one's second, ...), so a small language
gets its top tokens before a large one gets its thousandth. Byte tokens and the merge chains of kept
tokens are always kept (see `tokenizer_trim`), so removed tokens fall back to smaller pieces.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from aetheris.compress.calibration import CalibrationSource, calibration_examples
from aetheris.compress.registry import CompressionMethod, Outcome
from aetheris.compress.tokenizer_trim import MergeChains, fallback_ids, tokenizer_json, trimmed_json
from aetheris.data.sib200 import sib200_texts

log = logging.getLogger(__name__)
STALE_FILES = ("tokenizer.model", "vocab.json", "merges.txt", "spiece.model")


class VocabTrimSettings(CalibrationSource):
    min_count: int = Field(1, ge=1)
    vocab_size: int | None = Field(None, ge=1)  # a target size instead of keeping every seen token
    report_sentences: int = Field(100, ge=0)  # SIB-200 test sentences per language for the report


def count_tokens(tokenizer: Any, texts_by_lang: dict[str, list[str]]) -> dict[str, Counter]:
    return {lang: Counter(i for t in texts for i in tokenizer.encode(t, add_special_tokens=False))
            for lang, texts in texts_by_lang.items()}  # fmt: skip


def choose_tokens(counts: dict[str, Counter], required: set[int], data: dict[str, Any],
                  min_count: int, vocab_size: int | None) -> set[int]:  # fmt: skip
    """Required ids, plus seen tokens by best per-language rank (with their merge chains)."""
    best_rank: dict[int, int] = {}
    total: Counter = Counter()
    for counter in counts.values():
        ranked = [i for i, n in counter.most_common() if n >= min_count]
        for rank, i in enumerate(ranked):
            best_rank[i] = min(best_rank.get(i, rank), rank)
        total.update(counter)
    order = sorted(best_rank, key=lambda i: (best_rank[i], -total[i], i))
    chains = MergeChains(data)
    keep = chains.closure(required)
    if vocab_size is not None and vocab_size < len(keep):
        raise ValueError(f"vocab_size={vocab_size}: the byte/special tokens alone are {len(keep)}")
    for i in order:
        new = chains.closure({i}, keep)
        if vocab_size is not None and len(keep) + len(new) > vocab_size:
            continue  # does not fit whole (a token without its merge chain is unreachable)
        keep |= new
        if len(keep) == vocab_size:
            break
    return keep


def trim_tokenizer(tokenizer: Any, keep: set[int]) -> tuple[Any, list[int]]:
    """A new tokenizer holding only `keep` (renumbered), and the kept old ids in new-id order."""
    from transformers import AutoTokenizer

    data, kept = trimmed_json(tokenizer_json(tokenizer), keep)
    new_id = {old: new for new, old in enumerate(kept)}
    with tempfile.TemporaryDirectory(prefix="aetheris-vocab-") as tmp:
        tokenizer.save_pretrained(tmp)
        for name in STALE_FILES:
            Path(tmp, name).unlink(missing_ok=True)
        Path(tmp, "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
        config_path = Path(tmp, "tokenizer_config.json")
        if config_path.is_file():
            config = json.loads(config_path.read_text())
            if "added_tokens_decoder" in config:
                config["added_tokens_decoder"] = {str(new_id[int(k)]): v
                                                  for k, v in config["added_tokens_decoder"].items()}  # fmt: skip
            config_path.write_text(json.dumps(config, ensure_ascii=False))
        return AutoTokenizer.from_pretrained(tmp), kept


def _special_ids(model: nn.Module, tokenizer: Any) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    for config in (model.config, getattr(model, "generation_config", None)):
        for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
            value = getattr(config, key, None)
            ids |= {v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int)}
    return ids


@torch.no_grad()
def trim_embeddings(model: nn.Module, kept: list[int]) -> None:
    """Keep rows `kept` of the input embedding and the head (tied ones stay tied), in place."""
    index = torch.tensor(kept)
    new_id = {old: new for new, old in enumerate(kept)}
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is emb.weight
    emb.weight = nn.Parameter(emb.weight[index].clone(), requires_grad=False)
    emb.num_embeddings = len(kept)
    if emb.padding_idx is not None:
        emb.padding_idx = new_id.get(emb.padding_idx)
    if head is not None:
        head.weight = emb.weight if tied else nn.Parameter(head.weight[index].clone(), requires_grad=False)
        if head.bias is not None:
            head.bias = nn.Parameter(head.bias[index].clone(), requires_grad=False)
        head.out_features = len(kept)
    for config in (model.config, getattr(model, "generation_config", None)):
        for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
            value = getattr(config, key, None)
            if isinstance(value, list):
                setattr(config, key, [new_id[v] for v in value])
            elif isinstance(value, int):
                setattr(config, key, new_id[value])
    model.config.vocab_size = len(kept)


def changed_share(old: Any, new: Any, texts: list[str]) -> dict[str, float]:
    """Share of the old tokens that the new tokenizer no longer produces in place, and fertility."""
    old_n = same = new_n = nbytes = 0
    for text in texts:
        a = old.convert_ids_to_tokens(old.encode(text, add_special_tokens=False))
        b = new.convert_ids_to_tokens(new.encode(text, add_special_tokens=False))
        same += sum(m.size for m in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())
        old_n, new_n, nbytes = old_n + len(a), new_n + len(b), nbytes + len(text.encode())
    return {"changed_token_share": 1 - same / max(old_n, 1), "tokens_per_byte_before": old_n / max(nbytes, 1),
            "tokens_per_byte_after": new_n / max(nbytes, 1), "sentences": len(texts)}  # fmt: skip


def flores_test_texts(limit: int) -> dict[str, list[str]]:
    """The first `limit` SIB-200 `test` sentences (the study's evaluation split) per Tiny Aya
    language; none when the data is not on disk."""
    if not limit:
        return {}
    try:
        return {lang: texts[:limit] for lang, texts in sib200_texts("test").items()}
    except FileNotFoundError:  # no data folder (DataDirNotFoundError is one) or no SIB-200 in it
        return {}


class VocabTrim(CompressionMethod):
    name = "vocab-trim"
    Settings = VocabTrimSettings
    summary = "keep the tokens the calibration languages use (threshold or target size)"

    def apply(self, model, tokenizer, settings: VocabTrimSettings) -> Outcome:
        by_lang: dict[str, list[str]] = defaultdict(list)
        for example in calibration_examples(settings):
            by_lang[example.lang].append(example.text)
        data = tokenizer_json(tokenizer)
        required = fallback_ids(data) | _special_ids(model, tokenizer)
        keep = choose_tokens(count_tokens(tokenizer, by_lang), required, data, settings.min_count,
                             settings.vocab_size)  # fmt: skip
        new_tokenizer, kept = trim_tokenizer(tokenizer, keep)
        trim_embeddings(model, kept)
        report = {lang: changed_share(tokenizer, new_tokenizer, texts)
                  for lang, texts in flores_test_texts(settings.report_sentences).items()}  # fmt: skip
        digest = hashlib.sha256("\n".join(t for lang in sorted(by_lang) for t in by_lang[lang]).encode())
        calibration = {"source": settings.calibration_source, "languages": sorted(by_lang),
                       "count": sum(map(len, by_lang.values())), "hash": digest.hexdigest()}  # fmt: skip
        details = {"vocab_before": len(tokenizer), "vocab_after": len(kept), "required_tokens": len(required),
                   "flores_test": report}  # fmt: skip
        return Outcome(model, new_tokenizer, details, calibration)
