"""The `tools` evaluation task: greedy generation on tool-calling items, scored by checker.py."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from aetheris.toolcall.checker import check
from aetheris.toolcall.format import ToolItem
from aetheris.toolcall.prompting import render_prompt, supports_tools

TASK = "tools"


class _RateColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        return Text(f"{task.speed or 0:.2f} items/s")


def evaluate_tools(
    model: Any,
    tokenizer: Any,
    items: Sequence[ToolItem],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every item; return the task block of the results JSON (metric `acc`, per language).

    Each item record holds `id`, `score` (1.0 or 0.0), `category` (the failure category, None when
    it passed) and `kind` (simple, multiple, parallel or irrelevance); each language block adds
    `failures`, the count of items per failure category.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
    seen: set[tuple[str, str]] = set()
    for item in items:
        if (item.lang, item.id) in seen:
            raise ValueError(
                f"item id {item.id!r} appears twice for language {item.lang!r}: ids must be unique per "
                "language (evaluate one setting of a benchmark at a time, e.g. Arabic BFCL with Arabic "
                "or with English docs)"
            )
        seen.add((item.lang, item.id))
    native = supports_tools(tokenizer)
    prompts = [render_prompt(tokenizer, item, native=native) for item in items]
    replies = generate_replies(
        model,
        tokenizer,
        prompts,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        chat_template=bool(getattr(tokenizer, "chat_template", None)),
        progress=progress,
    )
    by_id: dict[str, list[ToolItem]] = defaultdict(list)
    for item in items:  # translations of an item share its id: they reveal wrong-language values
        by_id[item.id].append(item)
    languages: dict[str, dict[str, Any]] = {}
    for item, reply in zip(items, replies, strict=True):
        result = check(item, reply, translations=by_id[item.id])
        block = languages.setdefault(item.lang, {"items": [], "failures": Counter()})
        block["items"].append(
            {"id": item.id, "score": float(result.passed), "category": result.category, "kind": item.category}
        )
        if result.category:
            block["failures"][result.category] += 1
    for block in languages.values():
        scores = [r["score"] for r in block["items"]]
        block.update(score=sum(scores) / len(scores), n=len(scores), failures=dict(block["failures"]))
    return {"metric": "acc", "higher_is_better": True, "languages": languages}


def generate_replies(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    batch_size: int,
    max_new_tokens: int,
    chat_template: bool = True,
    progress: bool = True,
) -> list[str]:
    """Greedy continuations of `prompts`, batched with left padding (longest prompts first)."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    replies: list[str] = [""] * len(prompts)
    saved = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token: cannot batch prompts")
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    columns = [TextColumn("tools"), BarColumn(), MofNCompleteColumn(), _RateColumn(), TimeRemainingColumn()]
    try:
        with Progress(*columns, disable=not progress) as bar, torch.inference_mode():
            task = bar.add_task("tools", total=len(prompts))
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                # A rendered chat template already holds BOS and friends.
                enc = tokenizer(
                    [prompts[i] for i in batch],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=not chat_template,
                ).to(device)
                out = model.generate(
                    **enc,
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )
                texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                for i, text in zip(batch, texts, strict=True):
                    replies[i] = text
                bar.advance(task, len(batch))
    finally:
        tokenizer.padding_side, tokenizer.pad_token = saved
    return replies
