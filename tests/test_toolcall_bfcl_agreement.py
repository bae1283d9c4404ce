"""Our checker against BFCL's possible-answer semantics, on every English BFCL v3/v4 item.

Each gold answer must pass; each systematic corruption must get the verdict BFCL's AST checker
gives it (named beside each case), with the failure category that corresponds to BFCL's error type.
"""

import copy
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from aetheris.toolcall.checker import check
from aetheris.toolcall.format import OMIT, ToolItem
from aetheris.toolcall.loaders import load_bfcl


def data_dir() -> Path:
    env = os.environ.get("AETHERIS_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


BFCL = data_dir() / "tool_calling" / "bfcl"
pytestmark = pytest.mark.skipif(not BFCL.is_dir(), reason=f"BFCL data not found at {BFCL}")


def gold_calls(item: ToolItem) -> list[dict]:
    """One reply BFCL accepts: optional parameters left out, others at their first listed value."""
    calls = []
    for g in item.gold:
        required = item.tool(g.name).parameters.get("required", [])
        args = {}
        for p, values in g.arguments.items():
            given = [v for v in values if v != OMIT]
            if given and (OMIT not in values or p in required):
                args[p] = given[0]
        calls.append({"name": g.name, "arguments": args})
    return calls


def render(calls: list[dict], style: int) -> str:
    """The same calls in the output formats models use, so that parsing is tested at scale too."""
    if style == 0:
        return "\n".join("<tool_call>" + json.dumps(c) + "</tool_call>" for c in calls)
    if style == 1:
        return "```json\n" + json.dumps(calls, indent=2) + "\n```"
    if style == 2:
        return json.dumps(
            [{"type": "function", "function": {**c, "arguments": json.dumps(c["arguments"])}} for c in calls]
        )
    return "Here you go: " + json.dumps(calls[0] if len(calls) == 1 else calls)


def schema_of(item, call, param):
    return item.tool(call["name"]).parameters["properties"][param]


def corruptions(item: ToolItem, calls: list[dict]):
    """(name, corrupted calls, expected category or None for a pass, BFCL's verdict)."""
    first = calls[0]
    tool = item.tool(first["name"])
    required = [p for p in tool.parameters.get("required", []) if p in first["arguments"]]
    gold0 = item.gold[0]
    if required:
        c = copy.deepcopy(calls)
        del c[0]["arguments"][required[0]]
        yield "drop_required", c, "missing_argument"  # simple_function_checker:missing_required
    c = copy.deepcopy(calls)
    c[0]["name"] = first["name"] + "_v2"
    yield "rename_function", c, "wrong_function"  # simple_function_checker:wrong_func_name
    c = copy.deepcopy(calls)
    c[0]["arguments"]["zz_extra_param"] = 1
    yield "extra_argument", c, "extra_argument"  # simple_function_checker:unexpected_param
    optional_needed = [
        p
        for p in first["arguments"]
        if p not in tool.parameters.get("required", []) and OMIT not in gold0.arguments[p]
    ]
    if optional_needed:
        c = copy.deepcopy(calls)
        del c[0]["arguments"][optional_needed[0]]
        yield "drop_gold_optional", c, "missing_argument"  # simple_function_checker:missing_optional
    for p in first["arguments"]:
        kind = schema_of(item, first, p).get("type")
        answer_types = {type(v) for v in gold0.arguments[p] if v != OMIT}
        bad = 12345 if kind == "string" else "zzqx"
        if (
            kind is not None and type(bad) not in answer_types
        ):  # BFCL accepts a "variable" of the answers' type
            c = copy.deepcopy(calls)
            c[0]["arguments"][p] = bad
            yield "wrong_type", c, "wrong_type"  # type_error:simple
            break
    for p in first["arguments"]:
        kind = schema_of(item, first, p).get("type")
        numbers = [
            abs(v) for v in gold0.arguments[p] if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        if kind == "string":
            new = "zzqx unrelated value"
        elif kind in ("integer", "number") and numbers:
            new = int(max(numbers)) + 9973 + (0.5 if kind == "number" else 0)
        else:
            continue
        c = copy.deepcopy(calls)
        c[0]["arguments"][p] = new
        yield "value_not_in_list", c, "wrong_value"  # value_error:string / value_error:others
        break
    for p, value in first["arguments"].items():
        if isinstance(value, str) and value.strip():
            c = copy.deepcopy(calls)
            c[0]["arguments"][p] = "  " + value.upper() + " "
            yield "case_and_space", c, None  # BFCL standardises case and whitespace: accepted
            break
    for p, value in first["arguments"].items():
        if (
            isinstance(value, float)
            and value.is_integer()
            and schema_of(item, first, p).get("type") == "number"
        ):
            c = copy.deepcopy(calls)
            c[0]["arguments"][p] = int(value)
            yield "int_for_float", c, None  # BFCL converts int to float for a float parameter
            break
    if len(calls) > 1:
        yield "swap_parallel_order", calls[::-1], None  # parallel_function_checker_no_order
        yield "drop_one_call", calls[1:], "wrong_count"  # parallel_function_checker_no_order:wrong_count
    else:
        yield "duplicate_call", calls * 2, "wrong_count"  # simple_function_checker:wrong_count


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_checker_agrees_with_bfcl_semantics(version):
    items = load_bfcl(BFCL, version=version)
    assert Counter(i.category for i in items) == {
        "simple": 400,
        "multiple": 200,
        "parallel": 200,
        "irrelevance": 240,
    }
    seen: Counter = Counter()
    disagreements = []
    for n, item in enumerate(items):
        if item.category == "irrelevance":
            cases = [("no_call", "I cannot help with that using these functions.", None)]
            call = {"name": item.tools[0].function.name, "arguments": {}}
            cases.append(("call_on_irrelevance", render([call], n % 4), "call_when_none_expected"))
        else:
            calls = gold_calls(item)
            cases = [("gold", render(calls, n % 4), None)]
            cases += [
                (name, render(c, (n + k) % 4), want)
                for k, (name, c, want) in enumerate(corruptions(item, calls))
            ]
        for name, reply, want in cases:
            result = check(item, reply)
            seen[name] += 1
            if result.passed != (want is None) or result.category != want:
                disagreements.append(f"{item.id} {name}: want {want}, got {result}")
    assert not disagreements, f"{len(disagreements)} disagreements, e.g. {disagreements[:5]}"
    # every corruption kind was exercised on many items
    assert seen["gold"] == 800 and seen["call_on_irrelevance"] == 240 and seen["swap_parallel_order"] == 200
    for name in ("drop_required", "rename_function", "wrong_type", "value_not_in_list", "extra_argument"):
        assert seen[name] > 500, seen
    assert seen["int_for_float"] > 5 and seen["case_and_space"] > 300 and seen["drop_gold_optional"] > 20, (
        seen
    )
