"""Chat examples rendered with the tokenizer's own chat template, labelled on assistant tokens only.

The general method works with any template: render the conversation up to each assistant turn
(messages[:i] plus the generation prompt) and up to its end (messages[:i+1]); the text between the
two is what the assistant said, tool calls and end-of-turn marker included. With a fast tokenizer,
those character spans are mapped onto the tokens of the full rendering via offsets (robust to BPE
merges across the boundary); otherwise token counts of the prefixes are diffed. Everything else
(system, user, tool results, the "assistant" header) gets label -100.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from aetheris.data.sources import Example, LoadSummary

IGNORE = -100


# For tokenizers that ship none (base models, e.g. Gemma 3 270M): plain role markers, tools listed
# as JSON in a system turn, tool calls as <tool_call>{"name", "arguments"}</tool_call> — the same
# format the tool-calling checker parses and its fallback prompt asks for.
FALLBACK_CHAT_TEMPLATE = (
    "{% if tools %}<|system|>\nYou can call these functions. To call one, answer with "
    "<tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call>.\n"
    "{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|end|>\n{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n"
    "{% if m['role'] == 'assistant' and m.get('tool_calls') %}"
    "{% for c in m['tool_calls'] %}<tool_call>{{ {'name': c['function']['name'], "
    "'arguments': c['function']['arguments']} | tojson }}</tool_call>{% endfor %}"
    "{% else %}{{ m['content'] }}{% endif %}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give `tokenizer` the fallback template when it has none; True when it was added."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return True


class ChatTemplateError(ValueError):
    """The template cannot be labelled by prefixes (a later turn rewrites an earlier one)."""


def _render(tokenizer: Any, messages: Sequence[dict], tools: Sequence[dict] | None,
            add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tools=list(tools) if tools else None,
                                         add_generation_prompt=add_generation_prompt, tokenize=False)


def assistant_spans(tokenizer: Any, messages: Sequence[dict],
                    tools: Sequence[dict] | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and the character spans of each assistant turn in it."""
    if tokenizer.chat_template is None:
        raise ChatTemplateError(f"tokenizer {tokenizer.name_or_path!r} has no chat_template")
    full = _render(tokenizer, messages, tools, add_generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], tools, add_generation_prompt=True) if i else ""
        through = _render(tokenizer, messages[:i + 1], tools, add_generation_prompt=False)
        if not (full.startswith(through) and through.startswith(before)):
            raise ChatTemplateError(
                f"chat template of {tokenizer.name_or_path!r} is not prefix-stable at message {i}: "
                "rendering a longer conversation changes earlier text, so assistant turns cannot be "
                "located by prefixes")
        spans.append((len(before), len(through)))
    return full, spans


def render_chat(tokenizer: Any, messages: Sequence[dict], tools: Sequence[dict] | None = None,
                max_length: int | None = None) -> dict[str, list[int]]:
    """`input_ids`, `attention_mask` and `labels` (assistant tokens only) for one conversation."""
    full, spans = assistant_spans(tokenizer, messages, tools)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        # A token is the assistant's when it starts inside an assistant span.
        labels = [tok if any(a <= start < b for a, b in spans) and end > start else IGNORE
                  for tok, (start, end) in zip(ids, enc["offset_mapping"])]
    else:
        ids = list(tokenizer(full, add_special_tokens=False)["input_ids"])
        labels = [IGNORE] * len(ids)
        for a, b in spans:
            lo = len(tokenizer(full[:a], add_special_tokens=False)["input_ids"])
            hi = len(tokenizer(full[:b], add_special_tokens=False)["input_ids"])
            labels[lo:hi] = ids[lo:hi]
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def collate(rendered: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad rendered chats to the longest one; padding is masked and labelled -100."""
    width = max(len(r["input_ids"]) for r in rendered)
    ids = torch.full((len(rendered), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rendered), width), dtype=torch.long)
    labels = torch.full((len(rendered), width), IGNORE, dtype=torch.long)
    for i, r in enumerate(rendered):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(r["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def chat_batches(examples: Iterable[Example], tokenizer: Any, batch_size: int,
                 max_length: int | None = None, summary: LoadSummary | None = None) -> Iterator[dict[str, Any]]:
    """Padded batches of rendered chats (each example's own `tools` passed to the template).

    A chat left without any assistant token by `max_length` teaches nothing: it is skipped and
    counted in `summary` as "no_target_after_truncation".
    """
    summary = summary if summary is not None else LoadSummary()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("tokenizer has neither pad_token_id nor eos_token_id; padding needs one")
    rendered, langs = [], []
    for example in examples:
        if example.messages is None:
            raise ValueError(f"chat_batches needs chat examples; got plain text in {example.lang!r}")
        one = render_chat(tokenizer, example.messages, example.tools, max_length)
        if all(label == IGNORE for label in one["labels"]):
            summary.skip("no_target_after_truncation", f"chat in {example.lang!r}")
            continue
        rendered.append(one)
        langs.append(example.lang)
        if len(rendered) == batch_size:
            yield collate(rendered, pad_id) | {"langs": langs}
            rendered, langs = [], []
    if rendered:
        yield collate(rendered, pad_id) | {"langs": langs}
