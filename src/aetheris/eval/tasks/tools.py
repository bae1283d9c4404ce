"""`tools`: the project's multilingual tool-calling benchmark (70 languages) as a runner task.

Items come from the package's own held-out split (src/aetheris/data/toolcall/eval.jsonl);
replies are generated greedily and scored by `aetheris.toolcall.checker` (JSON only, never run).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import cached_property
from importlib import resources
from pathlib import Path

from aetheris.eval.tasks.base import Item, resolve_language, take
from aetheris.toolcall.checker import check
from aetheris.toolcall.format import ToolItem, read_items
from aetheris.toolcall.prompting import render_prompt, supports_tools
from aetheris.toolcall.task import generate_replies


class ToolsTask:
    name = "tools"
    metric = "acc"
    higher_is_better = True
    version = "1"
    max_new_tokens = 256

    @cached_property
    def _items(self) -> list[ToolItem]:
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
        replies = generate_replies(lm.model, tok, prompts, batch_size=lm.batch_size,
                                   max_new_tokens=self.max_new_tokens,
                                   chat_template=bool(getattr(tok, "chat_template", None)), progress=False)  # fmt: skip
        rows = []
        for it, reply in zip(items, replies, strict=True):
            item: ToolItem = it["item"]
            result = check(item, reply, translations=self._by_id[item.id])
            rows.append({"id": item.id, "score": float(result.passed), "category": result.category,
                         "kind": item.category, "output": reply[:500]})  # fmt: skip
        return rows
