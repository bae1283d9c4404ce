"""Score a model's reply against an item's gold calls, like BFCL's AST checker, for JSON tool calls.

The reply is data: it is read with `json` only, never evaluated. Every JSON value in the text is
decoded (so `<tool_call>{...}</tool_call>`, ```json fences, `[TOOL_CALLS][...]`, Cohere's
`<|START_ACTION|>[...]` and bare objects/lists all work), and the call-shaped objects among them are
the calls: `{"name", "arguments"}` (also `"parameters"`, `"tool_name"`), or OpenAI's
`{"type": "function", "function": {...}}`; `arguments` may be a JSON string.

A call passes when (in BFCL's order) its name is the gold one, every required parameter is there,
every parameter it passes is known to both the schema and the gold, each value has the schema's
type (an int is a number; 5.0 is not an integer; `bool` is not a number), each value equals an
acceptable one after normalisation, and every gold parameter without `""` among its values is
given. Parallel calls are matched to the gold in any order (a bipartite matching, so no greedy
choice can reject a correct set). An item without gold calls passes only when no call is made.

Normalisation: strings are NFKC-normalised and case-folded, `'` becomes `"`, whitespace and BFCL's
characters `, . / - _ * ^` are removed, and other Unicode punctuation is trimmed from both ends;
numbers compare by value (5 == 5.0); lists (in order) and objects are compared element-wise.

Failure categories (the first that applies):
  no_call                 a call was expected, the reply holds none
  invalid_json            the reply tries to call (a marker or a `"name":` key) but holds no readable call,
                          or a call's arguments are not a JSON object
  call_when_none_expected the item expects no call (irrelevance), the reply calls or tries to
  wrong_count             the number of calls differs from the gold's
  wrong_function          a call names another function (or one not among the tools)
  missing_argument        a required parameter, or a gold parameter that may not be omitted, is absent
  extra_argument          a parameter unknown to the schema, or not in the gold (BFCL: unexpected_param)
  wrong_type              a value does not have the schema's type
  wrong_language_value    a value is not acceptable, but equals an acceptable value of the same
                          parameter in a translation of this item (same id, other language), or one
                          of the gold call's `standard` renderings: the model answered in the wrong language
  wrong_value             any other unacceptable value
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aetheris.toolcall.format import OMIT, GoldCall, StrictValidator, ToolFunction, ToolItem

CATEGORIES = (
    "no_call",
    "invalid_json",
    "call_when_none_expected",
    "wrong_count",
    "wrong_function",
    "missing_argument",
    "extra_argument",
    "wrong_type",
    "wrong_language_value",
    "wrong_value",
)
# For a parallel item with no full matching, the reported failure is the nearest miss:
# a call that got the function right and one value wrong is closer than a wrong function.
_NEARNESS = {c: i for i, c in enumerate(reversed(CATEGORIES))}


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    category: str | None
    detail: str


@dataclass(frozen=True)
class Call:
    name: str
    arguments: dict[str, Any]


class CallParseError(ValueError):
    """The reply tries to call a tool but no call can be read from it."""


# ---------------------------------------------------------------- parsing

_THINKING = re.compile(r"<think>.*?(</think>|$)", re.S)
_MARKERS = ("<tool_call>", "[TOOL_CALLS]", "<|START_ACTION|>", "<|python_tag|>", "```json", "<function")
_JSON_START = re.compile(r"[\[{]")
_CALL_KEY = re.compile(r"\"(name|tool_name|function)\"\s*:")
_CALL_KEYS = {"name", "tool_name", "arguments", "parameters", "id", "tool_call_id", "type"}
_WRAPPER_KEYS = {"function", "id", "type", "index"}


def parse_calls(text: str) -> list[Call]:
    """The tool calls in a model reply; raises CallParseError when it tries to call but cannot be read."""
    text = _THINKING.sub("", text)  # reasoning may quote JSON; only the answer counts
    decoder = json.JSONDecoder()
    calls: list[Call] = []
    pos = 0
    while (match := _JSON_START.search(text, pos)) is not None:
        try:
            value, end = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            pos = match.start() + 1
            continue
        calls.extend(_calls_in(value))
        pos = end
    if not calls and (any(m in text for m in _MARKERS) or _CALL_KEY.search(text)):
        raise CallParseError("the reply looks like a tool call but holds no readable JSON call")
    return calls


def _calls_in(value: Any) -> Iterable[Call]:
    if isinstance(value, list):
        for v in value:
            yield from _calls_in(v)
    elif isinstance(value, dict):
        if isinstance(value.get("tool_calls"), list):
            yield from _calls_in(value["tool_calls"])
        elif isinstance(value.get("function"), dict) and set(value) <= _WRAPPER_KEYS:
            yield from _calls_in(value["function"])
        elif set(value) <= _CALL_KEYS and isinstance(value.get("name", value.get("tool_name")), str):
            yield Call(value.get("name", value.get("tool_name")), _arguments(value))


def _arguments(call: dict[str, Any]) -> dict[str, Any]:
    args = call.get("arguments", call.get("parameters", {}))
    if args is None:
        return {}
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise CallParseError(f"arguments of {call.get('name')!r} are not valid JSON ({e.msg})") from None
    if not isinstance(args, dict):
        raise CallParseError(f"arguments of {call.get('name')!r} are a {type(args).__name__}, not an object")
    return args


# ---------------------------------------------------------------- normalisation


def normalise_text(s: str) -> str:
    s = unicodedata.normalize("NFKC", s).casefold().replace("'", '"')
    s = "".join(ch for ch in s if not ch.isspace() and ch not in ",./-_*^")
    start, end = 0, len(s)
    while start < end and unicodedata.category(s[start]).startswith("P"):
        start += 1
    while end > start and unicodedata.category(s[end - 1]).startswith("P"):
        end -= 1
    return s[start:end]


def normalise(value: Any) -> Any:
    """A hashable form under which equal-after-normalisation values are equal."""
    if isinstance(value, bool) or value is None:
        return ("const", value)
    if isinstance(value, int | float):
        return ("num", value)  # 5 == 5.0 and hash(5) == hash(5.0)
    if isinstance(value, str):
        return ("str", normalise_text(value))
    if isinstance(value, list | tuple):
        return ("list", tuple(normalise(v) for v in value))
    if isinstance(value, dict):
        return ("dict", frozenset((k, normalise(v)) for k, v in value.items()))
    raise TypeError(f"not a JSON value: {value!r}")


def _type_only(schema: dict[str, Any]) -> dict[str, Any]:
    """The part of a parameter schema that says what *type* a value has (BFCL checks types, not enums)."""
    out: dict[str, Any] = {k: schema[k] for k in ("type",) if k in schema}
    if isinstance(schema.get("items"), dict):
        out["items"] = _type_only(schema["items"])
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {k: _type_only(v) for k, v in schema["properties"].items() if isinstance(v, dict)}
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            out[key] = [_type_only(s) for s in schema[key] if isinstance(s, dict)]
    return out


@functools.lru_cache(maxsize=4096)
def _type_validator(schema_json: str) -> Any:
    return StrictValidator(_type_only(json.loads(schema_json)))


# ---------------------------------------------------------------- checking


def check(item: ToolItem, reply: str, *, translations: Sequence[ToolItem] = ()) -> CheckResult:
    """Score one reply. `translations`: the same item in other languages (for wrong_language_value)."""
    try:
        calls = parse_calls(reply)
        parse_error = None
    except CallParseError as e:
        calls, parse_error = [], str(e)
    if not item.gold:
        if calls or parse_error:
            what = f"{len(calls)} call(s): {[c.name for c in calls]}" if calls else parse_error
            return CheckResult(False, "call_when_none_expected", f"no call expected, the reply made {what}")
        return CheckResult(True, None, "no call, as expected")
    if parse_error:
        return CheckResult(False, "invalid_json", parse_error)
    return check_calls(item, calls, translations=translations)


def check_calls(
    item: ToolItem, calls: Sequence[Call], *, translations: Sequence[ToolItem] = ()
) -> CheckResult:
    """Score already-parsed calls against the item's gold."""
    if not item.gold:
        if calls:
            return CheckResult(
                False, "call_when_none_expected", f"no call expected, got {[c.name for c in calls]}"
            )
        return CheckResult(True, None, "no call, as expected")
    if not calls:
        return CheckResult(False, "no_call", f"expected {len(item.gold)} call(s), the reply holds none")
    if len(calls) != len(item.gold):
        return CheckResult(
            False,
            "wrong_count",
            f"expected {len(item.gold)} call(s), got {len(calls)}: {[c.name for c in calls]}",
        )
    foreign = [_foreign_values(g, item, translations) for g in item.gold]
    results = [[check_call(item, g, c, foreign[i]) for c in calls] for i, g in enumerate(item.gold)]
    owner = _max_matching([[r.passed for r in row] for row in results])  # call -> gold
    if len(owner) == len(item.gold):
        return CheckResult(True, None, f"{len(calls)} call(s) match the gold")
    i, j = _diagnosis(results, owner)
    prefix = f"call {j} vs gold call {i} ({item.gold[i].name}): " if len(calls) > 1 else ""
    return CheckResult(False, results[i][j].category, prefix + results[i][j].detail)


def _diagnosis(results: list[list[CheckResult]], owner: dict[int, int]) -> tuple[int, int]:
    """The (gold, call) pair to blame: the first failing pair of the pairing with the nearest misses.

    Several pairings may be equally good at passing; among them, the one whose failures are nearest
    (e.g. one extra argument rather than a wrong value) names the mistake the model most likely made.
    """
    n = len(results)
    if n <= 7:  # 5040 pairings at most: exhaustive search is cheap
        score = lambda perm: sum(
            _NEARNESS.get(results[i][j].category, len(_NEARNESS)) for i, j in enumerate(perm)
        )
        best = max(itertools.permutations(range(n)), key=score)
        return next((i, j) for i, j in enumerate(best) if not results[i][j].passed)
    free_gold = [i for i in range(n) if i not in owner.values()]
    free_calls = [j for j in range(n) if j not in owner]
    return max(
        ((i, j) for i in free_gold for j in free_calls),
        key=lambda ij: _NEARNESS[results[ij[0]][ij[1]].category],
    )


def check_call(
    item: ToolItem, gold: GoldCall, call: Call, foreign: dict[str, set] | None = None
) -> CheckResult:
    """One call against one gold call."""
    if call.name != gold.name:
        known = "" if item.tool(call.name) else " (not among the tools)"
        return CheckResult(False, "wrong_function", f"called {call.name!r}{known}, expected {gold.name!r}")
    tool: ToolFunction | None = item.tool(gold.name)
    schema = tool.parameters if tool else {}
    props = schema.get("properties", {})
    for param in schema.get("required", []):
        if param not in call.arguments:
            return CheckResult(
                False, "missing_argument", f"{gold.name}: required parameter {param!r} missing"
            )
    for param, value in call.arguments.items():
        if param not in props or param not in gold.arguments:
            why = "not a parameter of the function" if param not in props else "not expected by the gold"
            return CheckResult(False, "extra_argument", f"{gold.name}: parameter {param!r} {why}")
        type_errors = list(_type_validator(json.dumps(props[param], sort_keys=True)).iter_errors(value))
        if type_errors:
            return CheckResult(
                False, "wrong_type", f"{gold.name}.{param}={value!r}: {type_errors[0].message}"
            )
        acceptable = {normalise(v) for v in gold.arguments[param]}
        if normalise(value) not in acceptable:
            if foreign and normalise(value) in foreign.get(param, set()):
                return CheckResult(
                    False,
                    "wrong_language_value",
                    f"{gold.name}.{param}={value!r} is this item's value in another language; "
                    f"acceptable: {gold.arguments[param]!r}",
                )
            return CheckResult(
                False, "wrong_value", f"{gold.name}.{param}={value!r} not among {gold.arguments[param]!r}"
            )
    for param, values in gold.arguments.items():
        if param not in call.arguments and OMIT not in values:
            return CheckResult(False, "missing_argument", f"{gold.name}: parameter {param!r} missing")
    return CheckResult(True, None, f"{gold.name} matches")


def _foreign_values(gold: GoldCall, item: ToolItem, translations: Sequence[ToolItem]) -> dict[str, set]:
    """Per parameter, the normalised values that are right in another language of this item."""
    out: dict[str, set] = {p: {normalise(v) for v in vs if v != OMIT} for p, vs in gold.standard.items()}
    for other in translations:
        if other.id != item.id or other.lang == item.lang:
            continue
        for g in other.gold:
            if g.name == gold.name:
                for p, vs in g.arguments.items():
                    out.setdefault(p, set()).update(normalise(v) for v in vs if v != OMIT)
    return out


def _max_matching(ok: list[list[bool]]) -> dict[int, int]:
    """Kuhn's augmenting paths: a largest set of (call -> gold) pairs with ok[gold][call], each used once."""
    owner: dict[int, int] = {}

    def place(i: int, seen: set[int]) -> bool:
        for j, fits in enumerate(ok[i]):
            if fits and j not in seen:
                seen.add(j)
                if j not in owner or place(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i in range(len(ok)):
        place(i, set())
    return owner
