"""The real tool-calling sets load into ToolItems with the documented counts, and their gold passes."""

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from aetheris.toolcall.checker import check
from aetheris.toolcall.format import OMIT, ItemError, ToolItem, validate_item
from aetheris.toolcall.loaders import (
    bfcl_acceptable,
    bfcl_schema,
    load_bfcl,
    load_bfcl_ar,
    load_functionchat,
    load_nodehaus,
)


def data_dir() -> Path:
    env = os.environ.get("AETHERIS_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


TC = data_dir() / "tool_calling"
needs_data = pytest.mark.skipif(not TC.is_dir(), reason=f"tool-calling data not found at {TC}")
BFCL_COUNTS = {"simple": 400, "multiple": 200, "parallel": 200, "irrelevance": 240}


def gold_reply(item: ToolItem) -> str:
    calls = []
    for g in item.gold:
        required = item.tool(g.name).parameters.get("required", [])
        args = {
            p: next(v for v in vs if v != OMIT)
            for p, vs in g.arguments.items()
            if OMIT not in vs or p in required
        }
        calls.append({"name": g.name, "arguments": args})
    return json.dumps(calls, ensure_ascii=False) if calls else "I cannot help with that."


def assert_gold_passes(items):
    failures = [(i.lang, i.id, r) for i in items if not (r := check(i, gold_reply(i))).passed]
    assert not failures, failures[:5]


def test_bfcl_types_become_json_schema():
    schema = bfcl_schema(
        {
            "type": "dict",
            "properties": {
                "x": {"type": "float", "optional": True},
                "pt": {"type": "tuple", "items": {"type": "integer"}},
                "d": {"type": "dict", "properties": {"k": {"type": "any"}}, "required": ["k"]},
            },
            "required": ["x"],
        }
    )
    assert schema == {
        "type": "object",
        "properties": {
            "x": {"type": "number"},
            "pt": {"type": "array", "items": {"type": "integer"}},
            "d": {"type": "object", "properties": {"k": {}}, "required": ["k"]},
        },
        "required": ["x"],
    }


def test_nested_possible_answers_expand_to_literal_values():
    schema = {"type": "object", "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}}}
    got = bfcl_acceptable(["", {"min": [1], "max": [2, ""]}], schema)
    assert got == ["", {"min": 1, "max": 2}, {"min": 1}]
    listed = bfcl_acceptable(
        [[{"a": ["x", "y"]}, {"a": ["z"]}]], {"type": "array", "items": {"type": "object"}}
    )
    assert listed == [[{"a": "x"}, {"a": "z"}], [{"a": "y"}, {"a": "z"}]]


@needs_data
@pytest.mark.parametrize("version", ["v3", "v4"])
def test_bfcl_english(version):
    items = load_bfcl(TC / "bfcl", version=version)
    assert Counter(i.category for i in items) == BFCL_COUNTS
    assert {i.lang for i in items} == {"en"} and len({i.id for i in items}) == 1040
    first = items[0]
    assert first.messages[-1].role == "user" and first.tools[0].function.parameters["type"] == "object"
    assert_gold_passes(items)


@needs_data
@pytest.mark.parametrize("descriptions", ["ar", "en"])
def test_bfcl_arabic_pairs_with_english(descriptions):
    items = load_bfcl_ar(TC / "bfcl_ar", descriptions=descriptions)
    assert Counter(i.category for i in items) == BFCL_COUNTS and {i.lang for i in items} == {"ar"}
    english = {i.id for i in load_bfcl(TC / "bfcl", version="v4")}
    assert {i.id for i in items} == english  # translations share ids
    assert any("\u0600" <= ch <= "\u06ff" for ch in items[0].messages[-1].content)
    assert_gold_passes(items)


@needs_data
def test_functionchat_korean():
    items = load_functionchat(TC / "functionchat_bench_ko")
    ids = Counter(i.id.split("-")[0] for i in items)
    # Singlecall: 25 functions x 4 queries x 5 tool lists; CallDecision: 606;
    # Dialog: 70 call turns + 59 turns that expect no call (slot questions, refusals)
    assert ids == {"singlecall": 500, "calldecision": 606, "dialog": 129}
    assert len({i.id for i in items}) == len(items) and {i.lang for i in items} == {"ko"}
    decision = [i for i in items if i.id.startswith("calldecision")]
    assert sum(bool(i.gold) for i in decision) == 100  # CALL; REJECT and SLOT expect no call
    # acceptable_arguments widen the gold: the Korean value and its English alternatives
    seoguipo = [i for i in items if i.id == "singlecall-11-exact"][0]
    assert "Jeju, Seogwipo" in seoguipo.gold[0].arguments["location"]
    for item in items:
        validate_item(item)
    assert_gold_passes(items)


@needs_data
def test_nodehaus_seven_languages():
    items = load_nodehaus(TC / "nodehaus_weather_agent_7lang")
    by_lang = Counter(i.lang for i in items)
    assert by_lang == dict.fromkeys(["de", "en", "et", "fr", "nl", "pl", "pt"], 60)
    en = [i for i in items if i.lang == "en"]
    assert Counter(i.category for i in en) == {"irrelevance": 10, "multiple": 49, "parallel": 1}
    assert {i.id for i in en} == {i.id for i in items if i.lang == "et"}  # parallel across languages
    followup = [i for i in en if i.messages[-1].role == "tool"]
    assert followup and all(i.gold for i in followup)  # second calls see the first call's result
    for item in items:
        validate_item(item)
    assert_gold_passes(items)
    with pytest.raises(ValueError, match="nodehaus language 'sw'"):
        load_nodehaus(TC / "nodehaus_weather_agent_7lang", langs=("sw",))


@needs_data
def test_bfcl_missing_answer_file_is_named(tmp_path):
    (tmp_path / "v4").mkdir()
    src = TC / "bfcl" / "v4" / "BFCL_v4_multiple.json"
    (tmp_path / "v4" / "BFCL_v4_multiple.json").write_text(src.read_text().splitlines()[0] + "\n")
    (tmp_path / "v4" / "possible_answer").mkdir()
    (tmp_path / "v4" / "possible_answer" / "BFCL_v4_multiple.json").write_text("")
    with pytest.raises(ItemError, match=r"BFCL_v4_multiple.json:1 \(id 'multiple_0'\): no possible answer"):
        load_bfcl(tmp_path, categories=("multiple",))
