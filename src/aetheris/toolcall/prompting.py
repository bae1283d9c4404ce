"""Render a tool-calling item as a prompt string for a given tokenizer.

If the tokenizer's chat template renders tools (we render a probe tool and look for its name),
the item goes through `apply_chat_template(messages, tools=...)`, the model's own format.

Otherwise the fallback: the tools are described in a system message (JSON, one per line) that asks
for calls as lines `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (the Hermes/Qwen
convention, which checker.py reads); earlier assistant calls are written the same way and tool
results become user turns `<tool_response>...</tool_response>`. That conversation is rendered with
the tokenizer's own template (the system text is folded into the first user turn when the template
rejects a system role), or, for a tokenizer without a template, as plain `Role: text` lines.

`turn_stops` gives the strings that end the assistant's turn in that rendering. A base model
does not stop by itself: it writes the next `User:` turn and more calls after it, which would
be read as extra calls (wrong_count) and cost a full `max_new_tokens` per item.
"""

from __future__ import annotations

import json
from typing import Any

from jinja2 import TemplateError

from aetheris.toolcall.format import ToolItem

FALLBACK_INSTRUCTIONS = (
    "You can call the following functions. Each is described as JSON:\n{tools}\n\n"
    "To call functions, answer only with one line per call, in this form:\n"
    '<tool_call>{{"name": "<function name>", "arguments": {{<argument name>: <value>, ...}}}}</tool_call>\n'
    "If none of the functions fits the request, answer in plain text without any <tool_call>."
)
_PROBE_NAME = "aetheris_probe_function_7f3a"
_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": _PROBE_NAME,
        "description": "probe",
        "parameters": {"type": "object", "properties": {}},
    },
}


def supports_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders the tools it is given."""
    if not getattr(tokenizer, "chat_template", None):
        return False
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hello"}],
            tools=[_PROBE_TOOL],
            tokenize=False,
            add_generation_prompt=True,
        )
    except (TemplateError, TypeError, ValueError):
        return False
    return _PROBE_NAME in text


PLAIN_ROLES = ("System", "User", "Assistant", "Tool")
_SENTINEL = "aetheris_turn_sentinel_5c1d"


def turn_stops(tokenizer: Any) -> list[str]:
    """Strings that end the assistant's reply in the prompts `render_prompt` makes for `tokenizer`.

    Plain `Role: text` prompts (no template): the start of any next turn. With a template: the
    text it writes right after an assistant message's content (its end-of-turn marker, e.g.
    `<|end|>`, `<end_of_turn>`, `<|im_end|>`), and the headers that open an assistant or a user
    turn (a base model often starts the next turn without closing its own).
    """
    if not getattr(tokenizer, "chat_template", None):
        return [f"\n\n{role}:" for role in PLAIN_ROLES]
    user = [{"role": "user", "content": _SENTINEL}]
    try:
        answered = _render(tokenizer, [*user, {"role": "assistant", "content": _SENTINEL + "2"}], False)
        asked = _render(tokenizer, user, False)
        prompt = _render(tokenizer, user, True)
    except (TemplateError, TypeError, ValueError):
        return []
    stops = []
    if _SENTINEL + "2" in answered:
        stops.append(_first_word(answered.split(_SENTINEL + "2", 1)[1]))  # end of turn
    if prompt.startswith(asked):
        stops.append(prompt[len(asked):].strip())  # the assistant header
    if _SENTINEL in asked:
        stops.append(_last_line(asked.split(_SENTINEL, 1)[0]))  # the user header
    return list(dict.fromkeys(s for s in stops if s))


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _first_word(text: str) -> str:
    words = text.split()
    return words[0] if words else ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def render_prompt(tokenizer: Any, item: ToolItem, *, native: bool | None = None) -> str:
    """The prompt text for one item, ending where the assistant's answer starts.

    `native`: use the template's own tool format (default: `supports_tools(tokenizer)`; pass it to
    avoid probing once per item).
    """
    native = supports_tools(tokenizer) if native is None else native
    tools = [t.model_dump() for t in item.tools]
    messages = [_template_message(m.model_dump(exclude_none=True)) for m in item.messages]
    if native:
        return tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=True
        )
    return _render_fallback(tokenizer, tools, messages)


def _template_message(message: dict[str, Any]) -> dict[str, Any]:
    # Chat templates iterate over `arguments` as a mapping: decode the JSON strings OpenAI uses.
    for call in message.get("tool_calls") or []:
        fn = call.get("function", {})
        if isinstance(fn.get("arguments"), str):
            try:
                fn["arguments"] = json.loads(fn["arguments"])
            except json.JSONDecodeError:
                pass
    return message


def fallback_system(tools: list[dict[str, Any]]) -> str:
    lines = "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in tools)
    return FALLBACK_INSTRUCTIONS.format(tools=lines)


def _render_fallback(tokenizer: Any, tools: list[dict[str, Any]], messages: list[dict[str, Any]]) -> str:
    system = fallback_system(tools)
    if messages[0]["role"] == "system":
        system = f"{messages[0].get('content') or ''}\n\n{system}"
        messages = messages[1:]
    plain = [_plain_message(m) for m in messages]
    if not getattr(tokenizer, "chat_template", None):
        turns = [f"System: {system}"] + [f"{m['role'].capitalize()}: {m['content']}" for m in plain]
        return "\n\n".join(turns) + "\n\nAssistant:"
    try:
        return tokenizer.apply_chat_template(
            [{"role": "system", "content": system}, *plain], tokenize=False, add_generation_prompt=True
        )
    except TemplateError:  # e.g. "System role not supported": fold it into the first user turn
        first = {"role": plain[0]["role"], "content": f"{system}\n\n{plain[0]['content']}"}
        return tokenizer.apply_chat_template([first, *plain[1:]], tokenize=False, add_generation_prompt=True)


def _plain_message(message: dict[str, Any]) -> dict[str, str]:
    if message["role"] == "tool":
        return {
            "role": "user",
            "content": f"<tool_response>\n{message.get('content') or ''}\n</tool_response>",
        }
    content = message.get("content") or ""
    calls = [c.get("function", c) for c in message.get("tool_calls") or []]
    lines = [
        "<tool_call>"
        + json.dumps({"name": c["name"], "arguments": c.get("arguments", {})}, ensure_ascii=False)
        + "</tool_call>"
        for c in calls
    ]
    return {"role": message["role"], "content": "\n".join(filter(None, [content, *lines]))}
