"""Real tool-calling benchmarks, read from their original files into ToolItems (scored by one checker).

- BFCL v3/v4, English: simple, multiple, parallel, irrelevance (`load_bfcl`).
- BFCL v4 in Arabic (kubrak94/gorilla), Arabic queries with Arabic or English docs (`load_bfcl_ar`).
- FunctionChat-Bench, Korean (`load_functionchat`): Singlecall (25 functions x 4 queries x 5 tool
  lists), CallDecision (CALL -> a call; REJECT and SLOT -> no call expected), and the Dialog turns
  whose answer is a call, a slot question or a refusal. Completion turns need a judge: left out.
- Nodehaus weather agent, 7 languages (`load_nodehaus`): every assistant tool-call turn, with the
  conversation up to it; the off-topic conversations expect no call.

Each loader takes the benchmark's own folder (e.g. `<data>/tool_calling/bfcl`).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from aetheris.toolcall.format import OMIT, GoldCall, ItemError, ToolItem

CATEGORIES = ("simple", "multiple", "parallel", "irrelevance")

# ---------------------------------------------------------------- BFCL

# BFCL writes Python type names; JSON Schema has its own. "any" constrains nothing.
_BFCL_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": None}
_BFCL_FILES = {
    "v3": {"simple": "simple", "multiple": "multiple", "parallel": "parallel", "irrelevance": "irrelevance"},
    "v4": {
        "simple": "simple_python",
        "multiple": "multiple",
        "parallel": "parallel",
        "irrelevance": "irrelevance",
    },
}
_MAX_ALTERNATIVES = 4096  # expanding nested possible answers must stay small


def bfcl_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A BFCL parameter schema as JSON Schema: type names mapped, non-standard `optional` dropped."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            mapped = _BFCL_TYPES.get(value, value)
            if mapped is not None:
                out["type"] = mapped
        elif key == "properties":
            out["properties"] = {k: bfcl_schema(v) for k, v in value.items()}
        elif key == "items" and isinstance(value, dict):
            out["items"] = bfcl_schema(value)
        elif key == "optional" or (key == "required" and not isinstance(value, list)):
            continue
        else:
            out[key] = value
    return out


def bfcl_acceptable(values: list[Any], schema: dict[str, Any]) -> list[Any]:
    """BFCL's acceptable values, with nested possible answers expanded into literal alternatives.

    For an object parameter BFCL lists dicts whose keys map to *lists* of acceptable values
    (`{"min": [300000], "max": [400000, ""]}`); for a list of objects, lists of such dicts. We
    expand them into every literal dict they allow, so that an acceptable value is always a value.
    """
    out: list[Any] = []
    for v in values:
        out.extend(_expand(v, schema) if v != OMIT else [OMIT])
    if len(out) > _MAX_ALTERNATIVES:
        raise ItemError(
            f"nested possible answers expand into {len(out)} alternatives (> {_MAX_ALTERNATIVES})"
        )
    return out


def _expand(value: Any, schema: dict[str, Any]) -> list[Any]:
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict) and all(isinstance(v, list) for v in value.values()):
        keys = list(value)
        options = [[_ABSENT if o == OMIT else o for o in value[k]] for k in keys]
        return [
            {k: o for k, o in zip(keys, combo, strict=True) if o is not _ABSENT}
            for combo in itertools.product(*options)
        ]
    if kind == "array" and isinstance(value, list) and value and isinstance(schema.get("items"), dict):
        items = schema["items"]
        if items.get("type") == "object" and all(isinstance(v, dict) for v in value):
            return [list(combo) for combo in itertools.product(*(_expand(v, items) for v in value))]
    return [value]


_ABSENT = object()


def _bfcl_items(questions: Path, answers: Path | None, category: str, lang: str) -> list[ToolItem]:
    gold_by_id: dict[str, list] = {}
    if answers is not None:
        for line in answers.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                gold_by_id[row["id"]] = row["ground_truth"]
    items = []
    for lineno, line in enumerate(questions.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        where = f"{questions}:{lineno} (id {row.get('id')!r})"
        if len(row["question"]) != 1:
            raise ItemError(f"{where}: expected a single-turn question, got {len(row['question'])} turns")
        functions = [{**f, "parameters": bfcl_schema(f["parameters"])} for f in row["function"]]
        schemas = {f["name"]: f["parameters"].get("properties", {}) for f in functions}
        gold = []
        if category != "irrelevance":
            if row["id"] not in gold_by_id:
                raise ItemError(f"{where}: no possible answer in {answers}")
            for entry in gold_by_id[row["id"]]:
                ((name, args),) = entry.items()
                name = _known_function(name, schemas)
                props = schemas.get(name, {})
                gold.append(
                    GoldCall(
                        name=name,
                        arguments={p: bfcl_acceptable(v, props.get(p, {})) for p, v in args.items()},
                    )
                )
        items.append(
            ToolItem(
                id=row["id"],
                lang=lang,
                split="eval",
                category=category,
                tools=[{"type": "function", "function": f} for f in functions],
                messages=row["question"][0],
                gold=gold,
            )
        )
    return items


def _known_function(name: str, schemas: dict[str, Any]) -> str:
    # BFCL v3 simple_363 (and the Arabic fork) names `find_closest` for the only tool
    # `restaurant_search.find_closest`; upstream v4 fixed it the same way.
    if name not in schemas:
        matches = [n for n in schemas if n.endswith("." + name)]
        if len(matches) == 1:
            return matches[0]
    return name


def load_bfcl(
    root: str | Path, *, version: str = "v4", categories: tuple[str, ...] = CATEGORIES
) -> list[ToolItem]:
    """English BFCL (`root` = the `bfcl` folder holding `v3/` and `v4/`)."""
    if version not in _BFCL_FILES:
        raise ValueError(f"BFCL version {version!r}: expected one of {sorted(_BFCL_FILES)}")
    folder = Path(root) / version
    return _bfcl_categories(folder, folder / "possible_answer", version, categories, "en")


def load_bfcl_ar(
    root: str | Path, *, descriptions: str = "ar", categories: tuple[str, ...] = CATEGORIES
) -> list[ToolItem]:
    """Arabic BFCL v4 (`root` = the `bfcl_ar` folder); `descriptions`: language of the function docs.

    Ids are English BFCL's, so an Arabic item and its English original are translations of each
    other. (`live_simple` is left out: it has no English counterpart here and some of its possible
    answers list no acceptable value at all.)
    """
    if descriptions not in ("ar", "en"):
        raise ValueError(f"descriptions={descriptions!r}: expected 'ar' or 'en'")
    root = Path(root)
    folder = root / "user_prompt_ar" / f"func_desc_{descriptions}" / f"func_param_desc_{descriptions}"
    return _bfcl_categories(folder, root / "possible_answer", "v4", categories, "ar")


def _bfcl_categories(
    folder: Path, answers: Path, version: str, categories: tuple[str, ...], lang: str
) -> list[ToolItem]:
    """Every category's prompts from `folder`, gold from `answers` (irrelevance has none)."""
    items = []
    for category in categories:
        stem = f"BFCL_{version}_{_BFCL_FILES[version][category]}.json"
        gold = None if category == "irrelevance" else answers / stem
        items += _bfcl_items(folder / stem, gold, category, lang)
    return items


# ---------------------------------------------------------------- FunctionChat-Bench (Korean)


def _gold_from_openai(tool_calls: list[dict[str, Any]], acceptable: Any) -> list[GoldCall]:
    """Gold calls from an OpenAI `tool_calls` answer plus FunctionChat's `acceptable_arguments`."""
    extra = _acceptable_map(acceptable)
    gold = []
    for call in tool_calls:
        fn = call.get("function", call)
        args = fn["arguments"]
        args = json.loads(args) if isinstance(args, str) else args
        arguments = {}
        for p, v in args.items():
            alternatives = extra.get(p, [])
            alternatives = alternatives if isinstance(alternatives, list) else [alternatives]
            arguments[p] = [v] + [a for a in alternatives if a != v]
        gold.append(GoldCall(name=fn["name"], arguments=arguments))
    return gold


def _acceptable_map(acceptable: Any) -> dict[str, Any]:
    # Either null, a dict, a JSON object as a string, or a sentence ("Only ground truth is allowed.").
    if isinstance(acceptable, dict):
        return acceptable
    if isinstance(acceptable, str):
        try:
            parsed = json.loads(acceptable)
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _category(gold: list[GoldCall], tools: list) -> str:
    if not gold:
        return "irrelevance"
    if len(gold) > 1:
        return "parallel"
    return "simple" if len(tools) == 1 else "multiple"


def _item(id: str, lang: str, tools: list, messages: list, gold: list[GoldCall]) -> ToolItem:
    return ToolItem(
        id=id,
        lang=lang,
        split="eval",
        category=_category(gold, tools),
        tools=tools,
        messages=messages,
        gold=gold,
    )


def load_functionchat(
    root: str | Path, *, parts: tuple[str, ...] = ("Singlecall", "CallDecision", "Dialog")
) -> list[ToolItem]:
    """FunctionChat-Bench (`root` = the `functionchat_bench_ko` folder)."""
    data = Path(root) / "data"
    system = {"role": "system", "content": (data / "system_prompt.txt").read_text(encoding="utf-8").strip()}
    items: list[ToolItem] = []
    for part in parts:
        path = data / f"FunctionChat-{part}.jsonl"
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            try:
                items += _functionchat_rows(part, row, system)
            except (KeyError, ValueError) as e:
                raise ItemError(f"{path}:{lineno}: {e}") from e
    return items


def _functionchat_rows(part: str, row: dict[str, Any], system: dict[str, str]) -> list[ToolItem]:
    if part == "Singlecall":
        acceptable = {a["serial_num"]: a["content"] for a in row["acceptable_arguments"]}
        out = []
        for tools in row["tools"]:
            for query, truth in zip(row["query"], row["ground_truth"], strict=True):
                n = query["serial_num"]
                call = json.loads(truth["content"])
                gold = _gold_from_openai([call], acceptable.get(n))
                messages = [system, {"role": "user", "content": query["content"]}]
                out.append(_item(f"singlecall-{n}-{tools['type']}", "ko", tools["content"], messages, gold))
        return out
    if part == "CallDecision":
        calls = row["ground_truth"].get("tool_calls") or []
        gold = _gold_from_openai(calls, row["acceptable_arguments"]) if row["category"] == "CALL" else []
        return [
            _item(f"calldecision-{row['serial_num']}", "ko", row["input_tools"], row["input_messages"], gold)
        ]
    if part == "Dialog":
        out = []
        for turn in row["turns"]:
            kind = turn["type_of_output"]
            if kind == "completion":
                continue
            calls = turn["ground_truth"].get("tool_calls") or [] if kind == "call" else []
            gold = _gold_from_openai(calls, turn["acceptable_arguments"])
            messages = [system, *turn["query"]]
            out.append(
                _item(f"dialog-{row['dialog_num']}-{turn['turn_num']}", "ko", row["tools"], messages, gold)
            )
        return out
    raise ValueError(f"unknown FunctionChat part {part!r}: expected Singlecall, CallDecision or Dialog")


# ---------------------------------------------------------------- Nodehaus weather agent (7 languages)

NODEHAUS_LANGS = {"deu": "de", "eng": "en", "est": "et", "fra": "fr", "nld": "nl", "pol": "pl", "por": "pt"}

# The repository defines these in agent.py, which is not among the copied files; the signatures
# are the ones its README states, the descriptions are ours.
NODEHAUS_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather_forecast",
            "description": "Get the weather (temperature, humidity, wind speed) for a city on a given date.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "The city name."},
                    "date": {"type": "string", "description": "The date, as YYYY-MM-DD."},
                },
                "required": ["city", "date"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_current_date",
            "description": "Get today's date as YYYY-MM-DD.",
            "parameters": {"type": "object", "properties": {}},
        },
    },
]


def load_nodehaus(root: str | Path, *, langs: tuple[str, ...] | None = None) -> list[ToolItem]:
    """Nodehaus weather-agent conversations (`root` = `nodehaus_weather_agent_7lang`).

    `langs`: canonical codes to load (default: all seven).
    """
    wanted = {v: k for k, v in NODEHAUS_LANGS.items()}
    for code in langs or ():
        if code not in wanted:
            raise ValueError(f"nodehaus language {code!r}: expected one of {sorted(wanted)}")
    items = []
    for code in langs or tuple(wanted):
        path = Path(root) / f"tools_use_{wanted[code]}.json"
        for conv in json.loads(path.read_text(encoding="utf-8")):
            turns = conv["conversation"]
            calls_at = [i for i, m in enumerate(turns) if m.get("tool_calls")]
            if not calls_at:  # off-topic request: the bot should decline without a call
                items.append(_item(f"weather-{conv['id']}", code, NODEHAUS_TOOLS, turns[:1], []))
            for k, i in enumerate(calls_at):
                gold = _gold_from_openai(turns[i]["tool_calls"], None)
                items.append(_item(f"weather-{conv['id']}-{k}", code, NODEHAUS_TOOLS, turns[:i], gold))
    return items
