"""`tools`: multilingual tool calling as a runner task, the one tool-calling evaluation path.

By default the items are the package's own held-out split (src/aetheris/data/toolcall/eval.jsonl,
70 languages); any other items (e.g. from `aetheris.toolcall.loaders`) can be passed in. Prompts
are rendered in the model's own tool format when its chat template has one, replies generated
greedily by the harness's `generate` up to the end of the assistant's turn (`turn_stops`: what
comes after is the model writing the next turns, not its answer), and scored by `aetheris.toolcall.checker` (JSON only, never
run).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import cached_property
from importlib import resources
from pathlib import Path

from aetheris.eval.lm import cut_at_stop
from aetheris.eval.tasks.base import Item, resolve_language, take
from aetheris.toolcall.checker import check
from aetheris.toolcall.format import ToolItem, read_items
from aetheris.toolcall.prompting import render_prompt, supports_tools, turn_stops


class ToolsTask:
    """Each result row: ``id``, ``score`` (1.0 or 0.0), ``category`` (why it failed, None when it
    passed), ``kind`` (simple, multiple, parallel or irrelevance) and the reply's start."""

    name = "tools"
    metric = "acc"
    higher_is_better = True
    version = "2"  # 2: replies end at the turn's end (1 generated max_new_tokens and read it all)
    max_new_tokens = 256

    def __init__(self, items: Sequence[ToolItem] | None = None) -> None:
        self._given = None if items is None else _unique_per_language(items)

    @cached_property
    def _items(self) -> list[ToolItem]:
        if self._given is not None:
            return self._given
        path = resources.files("aetheris") / "data" / "toolcall" / "eval.jsonl"
        with resources.as_file(path) as p:
            return read_items(p)

    @cached_property
    def _by_id(self) -> dict[str, list[ToolItem]]:
        by_id: dict[str, list[ToolItem]] = defaultdict(list)
        for item in self._items:  # translations of one item reveal values left in the wrong language
            by_id[item.id].append(item)
        return by_id

    def languages(self) -> list[str]:
        return sorted({item.lang for item in self._items})

    def load(self, lang: str, data_dir: Path | None, limit: int | None) -> list[Item]:
        lang = resolve_language(lang, {code: code for code in self.languages()})
        return take([{"id": it.id, "item": it} for it in self._items if it.lang == lang], limit)

    def score(self, lm, items: Sequence[Item]) -> list[Item]:
        tok = lm.tokenizer
        native = supports_tools(tok)
        prompts = [render_prompt(tok, it["item"], native=native) for it in items]
        # Without a chat template the prompt is plain text that still wants the BOS token.
        templated = bool(getattr(tok, "chat_template", None))
        stop = turn_stops(tok)
        replies = lm.generate(prompts, stop=stop, max_new_tokens=self.max_new_tokens, rendered=templated)
        rows = []
        for it, reply in zip(items, replies, strict=True):
            reply = cut_at_stop(reply, stop)  # whatever `lm` is: only its own turn is the answer
            item: ToolItem = it["item"]
            result = check(item, reply, translations=self._by_id[item.id])
            rows.append({"id": item.id, "score": float(result.passed), "category": result.category,
                         "kind": item.category, "output": reply[:500]})  # fmt: skip
        return rows


def _unique_per_language(items: Sequence[ToolItem]) -> list[ToolItem]:
    seen: set[tuple[str, str]] = set()
    for item in items:
        if (item.lang, item.id) in seen:
            raise ValueError(
                f"item id {item.id!r} appears twice for language {item.lang!r}: ids must be unique per "
                "language (evaluate one setting of a benchmark at a time, e.g. Arabic BFCL with Arabic "
                "or with English docs)"
            )
        seen.add((item.lang, item.id))
    return list(items)
