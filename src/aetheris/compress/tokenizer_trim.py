"""Rewrite a fast tokenizer (tokenizer.json) to keep only some token ids, renumbered 0..K-1.

BPE (byte-level, or SentencePiece-style with byte fallback) and Unigram models are supported.
What keeps every text encodable without `<unk>`: the tokens text falls back to are always kept
(the 256 byte tokens of a byte-level or byte-fallback vocabulary, else every one-character token),
a BPE merge survives only if both its parts and its result survive, and each kept token brings
the chain of merges that builds it (otherwise it could never be produced).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def tokenizer_json(tokenizer: Any) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(
            f"vocab-trim needs a fast tokenizer (tokenizer.json); got {type(tokenizer).__name__}"
        )
    data = json.loads(backend.to_str())
    kind = data["model"]["type"]
    if kind not in ("BPE", "Unigram"):
        raise ValueError(f"vocab-trim supports BPE and Unigram tokenizers; this one is {kind}")
    return data


def _has_byte_level(node: Any) -> bool:
    if isinstance(node, dict):
        return node.get("type") == "ByteLevel" or any(_has_byte_level(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_byte_level(v) for v in node)
    return False


def vocab_of(data: dict[str, Any]) -> dict[str, int]:
    """Token string -> id over the model's vocabulary and the added tokens."""
    model = data["model"]
    vocab = (
        dict(model["vocab"]) if model["type"] == "BPE" else {p: i for i, (p, _) in enumerate(model["vocab"])}
    )
    vocab.update({t["content"]: t["id"] for t in data.get("added_tokens", [])})
    return vocab


def fallback_ids(data: dict[str, Any]) -> set[int]:
    """Ids that must stay so that any text still encodes: added tokens, bytes, <unk>."""
    from tokenizers import pre_tokenizers

    vocab = vocab_of(data)
    model = data["model"]
    keep = {t["id"] for t in data.get("added_tokens", [])}
    if model.get("byte_fallback"):
        keep |= {i for t, i in vocab.items() if BYTE_TOKEN.fullmatch(t)}
    if _has_byte_level(data.get("pre_tokenizer")):
        keep |= {vocab[c] for c in pre_tokenizers.ByteLevel.alphabet() if c in vocab}
    elif not model.get("byte_fallback"):
        keep |= {i for t, i in vocab.items() if len(t) == 1}
    unk = model.get("unk_token") if model["type"] == "BPE" else None
    if unk in vocab:
        keep.add(vocab[unk])
    if model["type"] == "Unigram" and model.get("unk_id") is not None:
        keep.add(model["unk_id"])
    return keep


def _merge_pairs(merges: list) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


class MergeChains:
    """For BPE: which tokens each token is merged from, so a kept token can bring its chain."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.vocab = vocab_of(data)
        self.token_of = {i: t for t, i in self.vocab.items()}
        self.parents: dict[str, tuple[str, str]] = {}
        if data["model"]["type"] == "BPE":
            for a, b in _merge_pairs(data["model"]["merges"]):
                self.parents.setdefault(a + b, (a, b))  # the first (highest-priority) merge building it

    def closure(self, ids: Iterable[int], have: set[int] = frozenset()) -> set[int]:
        """`ids` and every token on the merge chains that build them, minus those in `have`."""
        out = set(ids) - have
        stack = [self.token_of[i] for i in out if i in self.token_of]
        while stack:
            for part in self.parents.get(stack.pop(), ()):
                i = self.vocab.get(part)
                if i is not None and i not in out and i not in have:
                    out.add(i)
                    stack.append(part)
        return out


def _remap_ids(node: Any, new_id: dict[int, int]) -> Any:
    """Post-processor special-token ids (TemplateProcessing `ids`, Roberta/Bert `cls`/`sep`)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "ids" and isinstance(v, list):
                out[k] = [new_id[i] for i in v]
            elif k in ("cls", "sep") and isinstance(v, list) and len(v) == 2 and isinstance(v[1], int):
                out[k] = [v[0], new_id[v[1]]]
            else:
                out[k] = _remap_ids(v, new_id)
        return out
    if isinstance(node, list):
        return [_remap_ids(v, new_id) for v in node]
    return node


def trimmed_json(data: dict[str, Any], keep: set[int]) -> tuple[dict[str, Any], list[int]]:
    """The tokenizer.json keeping `keep` (ids renumbered in their old order), and the kept old ids."""
    kept = sorted(keep)
    new_id = {old: new for new, old in enumerate(kept)}
    data = json.loads(json.dumps(data))
    model = data["model"]
    if model["type"] == "BPE":
        model["vocab"] = {t: new_id[i] for t, i in model["vocab"].items() if i in new_id}
        string_form = bool(model["merges"]) and isinstance(model["merges"][0], str)
        pairs = [(a, b) for a, b in _merge_pairs(model["merges"])
                 if a in model["vocab"] and b in model["vocab"] and a + b in model["vocab"]]  # fmt: skip
        model["merges"] = [f"{a} {b}" for a, b in pairs] if string_form else [[a, b] for a, b in pairs]
    else:
        model["vocab"] = [p for i, p in enumerate(model["vocab"]) if i in new_id]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    for token in data.get("added_tokens", []):
        token["id"] = new_id[token["id"]]
    data["post_processor"] = _remap_ids(data.get("post_processor"), new_id)
    return data, kept
