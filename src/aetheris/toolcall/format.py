"""The tool-calling item format: pydantic models, a JSONL reader and a schema-level validator.

One item per JSONL line::

    {"id": "weather-3", "lang": "sw", "split": "eval", "category": "simple",
     "tools": [{"type": "function", "function": {"name": ..., "description": ..., "parameters": {...}}}],
     "messages": [{"role": "user", "content": "..."}],
     "gold": [{"name": "get_weather", "arguments": {"city": ["Nairobi"], "unit": ["celsius", ""]}}]}

`gold` follows BFCL's possible-answer semantics: each argument lists its acceptable values
(literal JSON values, compared after normalisation); `""` among them means "may be omitted".
A gold call may also carry `standard`: per argument, renderings of the value in another language
(usually English) that are *not* acceptable for this item; a model value equal to one of them fails
as `wrong_language_value` rather than `wrong_value` (see checker.py).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aetheris.errors import UserError

Category = Literal["simple", "multiple", "parallel", "irrelevance"]

# "integer" means a JSON integer: 5.0 is not one (BFCL's checker agrees). "number" accepts ints.
# Draft 7: what OpenAI-style tool schemas are written in, and its meta-schema checks ~10x faster
# than 2020-12's (no $dynamicRef).
_TYPE_CHECKER = jsonschema.Draft7Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
)
StrictValidator = jsonschema.validators.extend(jsonschema.Draft7Validator, type_checker=_TYPE_CHECKER)

OMIT = ""  # an acceptable value meaning "this argument may be left out"


class ItemError(UserError, ValueError):
    """An item that does not follow the format; the message names the item and the key."""


class ToolFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"] = "function"
    function: ToolFunction


class Message(BaseModel):
    # extra keys (name, tool_call_id, ...) are kept: chat templates use them
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class GoldCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    arguments: dict[str, list[Any]] = Field(default_factory=dict)
    standard: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("arguments")
    @classmethod
    def _non_empty(cls, arguments: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [k for k, v in arguments.items() if not v]
        if empty:
            raise ValueError(f"argument(s) {empty} list no acceptable value")
        return arguments


class ToolItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    lang: str = Field(pattern=r"^[a-z]{2,3}(-[A-Z][a-z]{3})?(-[A-Z]{2})?$")
    split: Literal["train", "eval"] = "eval"
    category: Category
    tools: list[Tool]
    messages: list[Message] = Field(min_length=1)
    gold: list[GoldCall]

    @model_validator(mode="after")
    def _last_turn_awaits_a_call(self) -> ToolItem:
        # A tool result may end the context too: multi-step conversations ask for the next call.
        if self.messages[-1].role not in ("user", "tool"):
            raise ValueError(
                f"last message must be from the user (or a tool result), got {self.messages[-1].role!r}"
            )
        return self

    def tool(self, name: str) -> ToolFunction | None:
        return next((t.function for t in self.tools if t.function.name == name), None)


def read_items(path: str | Path, *, validate: bool = True) -> list[ToolItem]:
    """Read a JSONL file of items; errors name the file, the line and the key."""
    path = Path(path)
    items: list[ToolItem] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise ItemError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            try:
                item = ToolItem.model_validate(raw)
            except ValidationError as e:
                problems = "; ".join(
                    f"key {'.'.join(str(p) for p in err['loc']) or '<item>'}: {err['msg']}"
                    for err in e.errors()
                )
                raise ItemError(f"{where} (id {raw.get('id')!r}): {problems}") from None
            if validate:
                try:
                    validate_item(item)
                except ItemError as e:
                    raise ItemError(f"{where}: {e}") from None
            items.append(item)
    return items


def validate_item(item: ToolItem) -> None:
    """Check that the gold calls fit their tools' schemas and the category.

    Raises ItemError listing every problem found.
    """
    problems: list[str] = []
    names = [t.function.name for t in item.tools]
    if len(set(names)) != len(names):
        problems.append(f"tools: duplicate function names {sorted({n for n in names if names.count(n) > 1})}")
    for t in item.tools:
        error = _schema_error(json.dumps(t.function.parameters, sort_keys=True))
        if error:
            problems.append(f"tools.{t.function.name}.parameters: not a valid JSON Schema ({error})")
    for i, call in enumerate(item.gold):
        problems += [f"gold[{i}].{p}" for p in _call_problems(item, call)]
    problems += _category_problems(item)
    if problems:
        raise ItemError(f"item {item.id!r} ({item.lang}): " + "; ".join(problems))


@functools.lru_cache(maxsize=4096)
def _schema_error(schema_json: str) -> str | None:
    # Benchmarks repeat the same tools across items and languages: check each schema once.
    try:
        StrictValidator.check_schema(json.loads(schema_json))
    except jsonschema.SchemaError as e:
        return e.message
    return None


def _call_problems(item: ToolItem, call: GoldCall) -> list[str]:
    tool = item.tool(call.name)
    if tool is None:
        return [f"name: {call.name!r} is not among the tools {[t.function.name for t in item.tools]}"]
    props = tool.parameters.get("properties", {})
    problems = []
    for param in tool.parameters.get("required", []):
        if param not in call.arguments:
            problems.append(f"arguments: required parameter {param!r} missing")
        elif OMIT in call.arguments[param] and not StrictValidator(props.get(param, {})).is_valid(OMIT):
            problems.append(f'arguments.{param}: required, so it cannot list "" (may be omitted)')
    for param, values in list(call.arguments.items()) + list(call.standard.items()):
        if param not in props:
            problems.append(f"arguments.{param}: not a parameter of {call.name!r} (has {sorted(props)})")
            continue
        for value in values:
            if value == OMIT:
                continue  # the omission marker, not a value
            errors = list(StrictValidator(props[param]).iter_errors(value))
            if errors:
                problems.append(
                    f"arguments.{param}: value {value!r} does not fit its schema ({errors[0].message})"
                )
    return problems


def _category_problems(item: ToolItem) -> list[str]:
    n, c = len(item.gold), item.category
    expected = {"irrelevance": n == 0, "simple": n == 1, "multiple": n == 1, "parallel": n >= 2}[c]
    problems = [] if expected else [f"category: {c!r} does not fit {n} gold call(s)"]
    if c == "simple" and len(item.tools) != 1:
        problems.append(f"category: 'simple' means one tool, got {len(item.tools)}")
    if c == "multiple" and len(item.tools) < 2:
        problems.append(f"category: 'multiple' means a choice among several tools, got {len(item.tools)}")
    return problems
