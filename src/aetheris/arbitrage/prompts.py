"""Prompts to arbitrate: tool-calling items (with gold, so the checker can judge) and chats.

A chat row's prompt is its conversation up to its last assistant turn (that answer is dropped:
the pool writes a new one). Each prompt has an id hashed from its content, so a resumed run
recognises the prompts it has done whatever order the sources list them in.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aetheris.arbitrage.config import Prompts
from aetheris.data.sources import LoadSummary, embedded_corpus, read_sources
from aetheris.toolcall.format import ToolItem, read_items


@dataclass(frozen=True)
class Prompt:
    id: str
    lang: str
    messages: tuple[dict[str, Any], ...]  # ends with a user (or tool) turn
    tools: tuple[dict[str, Any], ...] | None = None
    item: ToolItem | None = None  # a tool-calling item: gold calls for the checker

    @property
    def kind(self) -> str:
        return "tools" if self.tools else "chat"


def _prompt_id(lang: str, messages: Iterable[dict], tools: Iterable[dict] | None) -> str:
    blob = json.dumps([lang, list(messages), list(tools or [])], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def from_item(item: ToolItem) -> Prompt:
    messages = tuple(m.model_dump(exclude_none=True) for m in item.messages)
    tools = tuple(t.model_dump() for t in item.tools)
    return Prompt(_prompt_id(item.lang, messages, tools), item.lang, messages, tools, item)


def from_chat(lang: str, messages: Iterable[dict], tools: Iterable[dict] | None) -> Prompt | None:
    messages = list(messages)
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    context = tuple(messages[:last] if last is not None else messages)
    if not context or context[-1].get("role") not in ("user", "tool"):
        return None
    tools = tuple(tools) if tools else None
    return Prompt(_prompt_id(lang, context, tools), lang, context, tools)


def _tool_items(spec: str) -> list[ToolItem]:
    if spec == "embedded":
        with resources.as_file(resources.files("aetheris") / "data" / "toolcall" / "train.jsonl") as p:
            return read_items(p)
    return read_items(spec)


def load_prompts(cfg: Prompts, summary: LoadSummary | None = None) -> list[Prompt]:
    """Every prompt the config names, deduplicated, filtered by language, capped per language."""
    summary = summary if summary is not None else LoadSummary()
    out: list[Prompt] = [from_item(it) for spec in cfg.tools for it in _tool_items(spec)]
    for spec in cfg.chats:
        rows = embedded_corpus("chat", summary) if spec == "embedded:chat" else read_sources([spec], summary)
        for ex in rows:
            if ex.messages is None:
                continue
            prompt = from_chat(ex.lang, ex.messages, ex.tools)
            if prompt is None:
                summary.skip("no_user_turn_before_answer", f"{spec} ({ex.lang})")
            else:
                out.append(prompt)
    keep = set(cfg.languages) if cfg.languages else None
    seen: set[str] = set()
    count: Counter[tuple[str, str]] = Counter()
    kept = []
    for p in out:
        if p.id in seen or (keep is not None and p.lang not in keep):
            continue
        if cfg.per_language is not None and count[p.lang, p.kind] >= cfg.per_language:
            continue
        seen.add(p.id)
        count[p.lang, p.kind] += 1
        kept.append(p)
    return kept
