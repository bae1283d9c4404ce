"""The checker on hand-made items: parsing, every failure category, normalisation, matching."""

import json

import pytest

from aetheris.toolcall.checker import CATEGORIES, CallParseError, check, normalise, parse_calls
from aetheris.toolcall.format import GoldCall, ToolItem

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "scale": {"type": "number"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def item(gold, category="simple", tools=(WEATHER,), lang="sw", id="w1"):
    return ToolItem(
        id=id,
        lang=lang,
        category=category,
        tools=list(tools),
        messages=[{"role": "user", "content": "Hali ya hewa Nairobi?"}],
        gold=gold,
    )


NAIROBI = item(
    [GoldCall(name="get_weather", arguments={"city": ["Nairobi"], "days": [3, ""], "unit": ["celsius", ""]})]
)


def tc(name, **args):
    return "<tool_call>" + json.dumps({"name": name, "arguments": args}, ensure_ascii=False) + "</tool_call>"


@pytest.mark.parametrize(
    "reply",
    [
        tc("get_weather", city="Nairobi"),
        '```json\n{"name": "get_weather", "arguments": {"city": "Nairobi", "days": 3}}\n```',
        '[{"name": "get_weather", "parameters": {"city": "Nairobi"}}]',
        '{"type": "function", "function": {"name": "get_weather", '
        '"arguments": "{\\"city\\": \\"Nairobi\\"}"}}',
        '<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "get_weather", '
        '"parameters": {"city": "Nairobi"}}]<|END_ACTION|>',
        '{"tool_calls": [{"id": "c1", "type": "function", '
        '"function": {"name": "get_weather", "arguments": {"city": "Nairobi"}}}]}',
        '<think>maybe {"name": "get_time", "arguments": {}}</think>Sure. '
        + tc("get_weather", city=" nairobi."),
    ],
)
def test_reply_formats_all_pass(reply):
    result = check(NAIROBI, reply)
    assert result.passed, result


@pytest.mark.parametrize(
    ("reply", "category"),
    [
        ("Nairobi ni joto leo.", "no_call"),
        ('<tool_call>{"name": "get_weather", "arguments": {"city": "Nairobi"</tool_call>', "invalid_json"),
        ('{"name": "get_weather", "arguments": "{city: Nairobi}"}', "invalid_json"),
        ('{"name": "get_weather", "arguments": [1, 2]}', "invalid_json"),
        (tc("get_time"), "wrong_function"),
        (tc("get_forecast", city="Nairobi"), "wrong_function"),
        (tc("get_weather", days=3), "missing_argument"),
        (tc("get_weather", city="Nairobi", mood="sunny"), "extra_argument"),
        (tc("get_weather", city="Nairobi", tags=["x"]), "extra_argument"),  # in the schema, not in the gold
        (tc("get_weather", city="Nairobi", days="3"), "wrong_type"),
        (tc("get_weather", city="Nairobi", days=3.0), "wrong_type"),  # BFCL: a float is not an integer
        (tc("get_weather", city="Nairobi", days=True), "wrong_type"),
        (tc("get_weather", city="Nairobi", days=4), "wrong_value"),
        (tc("get_weather", city="Mombasa"), "wrong_value"),
        (tc("get_weather", city="Nairobi") + tc("get_weather", city="Nairobi"), "wrong_count"),
    ],
)
def test_failure_categories(reply, category):
    result = check(NAIROBI, reply)
    assert not result.passed and result.category == category, result
    assert category in CATEGORIES and result.detail


def test_int_is_a_number_and_numbers_compare_by_value():
    it = item([GoldCall(name="get_weather", arguments={"city": ["Nairobi"], "scale": [2.0]})])
    assert check(it, tc("get_weather", city="Nairobi", scale=2)).passed
    assert check(it, tc("get_weather", city="Nairobi", scale=2.0)).passed
    assert check(it, tc("get_weather", city="Nairobi", scale=2.5)).category == "wrong_value"


def test_missing_gold_parameter_without_omission_marker():
    it = item([GoldCall(name="get_weather", arguments={"city": ["Nairobi"], "unit": ["celsius"]})])
    assert check(it, tc("get_weather", city="Nairobi")).category == "missing_argument"
    assert check(it, tc("get_weather", city="Nairobi", unit="Celsius")).passed


def test_string_normalisation():
    assert normalise("San Diego, CA") == normalise("san diego ca") == normalise("SanDiego-CA.")
    assert normalise("ＮＡＩＲＯＢＩ") == normalise("nairobi")  # NFKC folds full-width letters
    assert normalise("«Nairobi»") == normalise("Nairobi")  # punctuation trimmed at the ends
    assert normalise("Nairobi") != normalise("Mombasa")
    assert normalise([1, "A b"]) == normalise([1.0, "ab"]) != normalise(["ab", 1])  # lists keep order
    assert normalise({"a": "X"}) == normalise({"a": "x"})
    assert normalise(True) != normalise(1)


def test_parallel_calls_any_order_with_a_matching_greedy_would_miss():
    # Gold 0 accepts either city; gold 1 only Mombasa. Greedy would give call 0 (Mombasa) to gold 0.
    gold = [
        GoldCall(name="get_weather", arguments={"city": ["Nairobi", "Mombasa"]}),
        GoldCall(name="get_weather", arguments={"city": ["Mombasa"]}),
    ]
    it = item(gold, category="parallel")
    assert check(it, tc("get_weather", city="Mombasa") + tc("get_weather", city="Nairobi")).passed
    assert check(it, tc("get_weather", city="Nairobi") + tc("get_weather", city="Mombasa")).passed
    bad = check(it, tc("get_weather", city="Nairobi") + tc("get_weather", city="Kisumu"))
    assert (
        not bad.passed
        and bad.category == "wrong_value"
        and "gold call 1" in bad.detail
        and "call 1 vs" in bad.detail
    )


def test_irrelevance():
    it = item([], category="irrelevance")
    assert check(it, "Samahani, siwezi kusaidia na hilo.").passed
    assert check(it, "[]").passed
    assert check(it, tc("get_weather", city="Nairobi")).category == "call_when_none_expected"
    assert check(it, "<tool_call>{broken</tool_call>").category == "call_when_none_expected"


def test_wrong_language_value_from_translations_and_standard():
    sw = item([GoldCall(name="get_weather", arguments={"city": ["Uholanzi"]})], lang="sw", id="x")
    en = item(
        [GoldCall(name="get_weather", arguments={"city": ["Netherlands", "Holland"]})], lang="en", id="x"
    )
    other = item([GoldCall(name="get_weather", arguments={"city": ["Paris"]})], lang="fr", id="y")
    assert check(sw, tc("get_weather", city="Netherlands"), translations=[sw, en, other]).category == (
        "wrong_language_value"
    )
    assert check(sw, tc("get_weather", city="Paris"), translations=[sw, en, other]).category == "wrong_value"
    assert (
        check(sw, tc("get_weather", city="Netherlands")).category == "wrong_value"
    )  # nothing to compare with
    std = item(
        [GoldCall(name="get_weather", arguments={"city": ["Uholanzi"]}, standard={"city": ["Netherlands"]})]
    )
    assert check(std, tc("get_weather", city="netherlands")).category == "wrong_language_value"
    assert check(std, tc("get_weather", city="Uholanzi")).passed


def test_output_is_never_evaluated():
    # Python-looking calls are not JSON: nothing is executed, and no call is read from them.
    with pytest.raises(CallParseError):
        parse_calls('{"name": __import__("os").system("echo hacked")}')
    assert parse_calls('get_weather(city="Nairobi")') == []
