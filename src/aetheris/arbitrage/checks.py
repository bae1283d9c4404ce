"""Checks a candidate must pass before any arbiter ranks it, and its reply as an SFT message.

- Tool prompts: the project's checker (JSON parsing only, never evaluation) against the item's
  gold calls; a chat with tools but no gold only has to be readable when it calls.
- Language ID on the reply's prose (a reply that makes tool calls has none worth checking).
- An empty reply teaches nothing and fails; so does chat markup (`<|assistant|>`, `<|admin|>`: a
  model inventing turns) and, by default, an echo of the user's request (what a base model finds
  most likely, so the likelihood arbiter would otherwise keep it).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from aetheris.arbitrage.config import Checks
from aetheris.arbitrage.lid import LanguageChecker
from aetheris.arbitrage.prompts import Prompt
from aetheris.toolcall.checker import Call, CallParseError, check, parse_calls


@dataclass
class CheckRecord:
    passed: bool
    lid: dict[str, Any] | None = None
    tool: dict[str, Any] | None = None
    reason: str = ""
    calls: list[Call] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "lid": self.lid, "tool": self.tool}


_MARKUP = re.compile(r"<\|[A-Za-z_]+\|>")


def _echo(prompt: Prompt, reply: str) -> float:
    last = next((m.get("content") or "" for m in reversed(prompt.messages) if m.get("role") == "user"), "")
    return difflib.SequenceMatcher(None, last.strip().casefold(), reply.strip().casefold()).ratio()


class Checker:
    def __init__(self, cfg: Checks) -> None:
        self.cfg = cfg
        self.lid = LanguageChecker(cfg.lid_min_chars, cfg.lid_accuracy) if cfg.language_id else None

    def __call__(self, prompt: Prompt, reply: str) -> CheckRecord:
        if not reply.strip():
            return CheckRecord(False, reason="empty reply")
        calls, parse_error = [], None
        if prompt.tools:
            try:
                calls = parse_calls(reply)
            except CallParseError as e:
                parse_error = str(e)
        tool = None
        if prompt.tools and self.cfg.tool_checker:
            if prompt.item is not None:
                result = check(prompt.item, reply)
                tool = {"passed": result.passed, "category": result.category, "detail": result.detail}
            else:
                tool = {"passed": parse_error is None, "category": "invalid_json" if parse_error else None,
                        "detail": parse_error or f"{len(calls)} readable call(s); no gold to compare"}  # fmt: skip
            if not tool["passed"]:
                return CheckRecord(False, tool=tool, reason=f"tool checker: {tool['category']}")
        # Tool calls may carry a marker (Llama's <|python_tag|>); prose with turn markup may not.
        if not calls and (markup := _MARKUP.search(reply)) is not None:
            return CheckRecord(False, tool=tool, reason=f"chat markup {markup.group()!r} in the reply")
        if not calls and self.cfg.echo_ratio is not None and (ratio := _echo(prompt, reply)) >= self.cfg.echo_ratio:
            return CheckRecord(False, tool=tool, reason=f"echoes the request (similarity {ratio:.2f})")
        lid = None
        if self.lid is not None:
            if calls:
                lid = {"status": "skipped", "expected": prompt.lang, "detected": None,
                       "reason": "the reply is tool calls"}  # fmt: skip
            else:
                lid = self.lid.check(reply, prompt.lang).as_dict()
            if lid["status"] == "fail":
                return CheckRecord(False, lid=lid, tool=tool, reason=f"language ID: {lid['reason']}")
        return CheckRecord(True, lid=lid, tool=tool, calls=calls)


def assistant_message(record: CheckRecord, reply: str) -> dict[str, Any]:
    """The winning reply as the SFT loader reads it: structured tool calls, or text."""
    if record.calls:
        return {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in record.calls]}  # fmt: skip
    return {"role": "assistant", "content": reply.strip()}
