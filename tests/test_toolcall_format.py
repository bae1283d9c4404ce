"""The item format: reading JSONL with clear errors, and validating gold against the tool schemas."""

import json

import pytest

from aetheris.toolcall.format import GoldCall, ItemError, ToolItem, read_items, validate_item

TOOL = {
    "type": "function",
    "function": {
        "name": "send_money",
        "description": "Send money to a contact.",
        "parameters": {
            "type": "object",
            "properties": {
                "to": {"type": "string"},
                "amount": {"type": "number"},
                "currency": {"type": "string", "enum": ["KES", "TZS", "UGX"]},
                "note": {"type": "string"},
            },
            "required": ["to", "amount"],
        },
    },
}
OTHER = {
    "type": "function",
    "function": {"name": "get_balance", "parameters": {"type": "object", "properties": {}}},
}


def raw(**over):
    item = {
        "id": "pay-1",
        "lang": "sw",
        "split": "eval",
        "category": "simple",
        "tools": [TOOL],
        "messages": [{"role": "user", "content": "Mtumie Amina shilingi 500."}],
        "gold": [
            {"name": "send_money", "arguments": {"to": ["Amina"], "amount": [500], "currency": ["KES", ""]}}
        ],
    }
    item.update(over)
    return item


def write(tmp_path, rows):
    path = tmp_path / "items.jsonl"
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
    )
    return path


def test_reads_valid_items(tmp_path):
    zh = raw(id="pay-1", lang="zh-Hans", messages=[{"role": "user", "content": "给阿米娜转500。"}])
    items = read_items(write(tmp_path, [raw(), zh, raw(lang="pcm", split="train")]))
    assert [i.lang for i in items] == ["sw", "zh-Hans", "pcm"]
    assert items[0].gold[0].arguments["currency"] == ["KES", ""] and items[2].split == "train"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", r"items.jsonl:2: not valid JSON"),
        (raw(category="nested"), r"items.jsonl:2 \(id 'pay-1'\): key category"),
        (
            raw(gold=[{"name": "send_money", "arguments": {"to": []}}]),
            r"key gold.0.arguments: .*\['to'\] list no",
        ),
        (raw(messages=[{"role": "assistant", "content": "Sawa"}]), "last message must be from the user"),
        (raw(lang="Swahili"), "key lang"),
        (raw(extra_key=1), "key extra_key"),
        (
            raw(gold=[{"name": "send_cash", "arguments": {}}]),
            r"items.jsonl:2: item 'pay-1' \(sw\): gold\[0\].name: 'send_cash'",
        ),
    ],
)
def test_errors_name_file_line_and_key(tmp_path, row, message):
    with pytest.raises(ItemError, match=message):
        read_items(write(tmp_path, [raw(), row]))


def test_read_without_validation_keeps_schema_problems(tmp_path):
    bad = raw(gold=[{"name": "send_money", "arguments": {"to": ["Amina"]}}])
    assert len(read_items(write(tmp_path, [bad]), validate=False)) == 1


def item(gold, category="simple", tools=(TOOL,)):
    return ToolItem(
        id="x",
        lang="sw",
        category=category,
        tools=list(tools),
        messages=[{"role": "user", "content": "?"}],
        gold=gold,
    )


@pytest.mark.parametrize(
    ("gold", "category", "tools", "problem"),
    [
        ({"to": ["Amina"]}, "simple", (TOOL,), "required parameter 'amount' missing"),
        ({"to": ["Amina"], "amount": ["500"]}, "simple", (TOOL,), "'500' is not of type 'number'"),
        ({"to": ["Amina"], "amount": [500], "currency": ["USD"]}, "simple", (TOOL,), "'USD' is not one of"),
        ({"to": ["Amina"], "amount": [500], "fee": [1]}, "simple", (TOOL,), "fee: not a parameter"),
        ({"to": ["Amina"], "amount": [500, ""]}, "simple", (TOOL,), "required, so it cannot list"),
        ({"to": ["Amina"], "amount": [500]}, "parallel", (TOOL,), "'parallel' does not fit 1 gold call"),
        ({"to": ["Amina"], "amount": [500]}, "multiple", (TOOL,), "'multiple' means a choice among several"),
        ({"to": ["Amina"], "amount": [500]}, "simple", (TOOL, OTHER), "'simple' means one tool"),
    ],
)
def test_validate_item_finds_schema_and_category_problems(gold, category, tools, problem):
    with pytest.raises(ItemError, match=problem):
        validate_item(item([GoldCall(name="send_money", arguments=gold)], category, tools))


def test_validate_item_accepts_good_items_and_lists_all_problems():
    validate_item(item([GoldCall(name="send_money", arguments={"to": ["Amina"], "amount": [500, 500.0]})]))
    validate_item(item([], "irrelevance"))
    validate_item(item([GoldCall(name="send_money", arguments={"to": ["A"], "amount": [1]})] * 2, "parallel"))
    with pytest.raises(ItemError) as err:
        validate_item(
            item([GoldCall(name="send_money", arguments={"to": [5], "amount": ["x"]})], "irrelevance")
        )
    assert (
        "to: value 5" in str(err.value)
        and "amount: value 'x'" in str(err.value)
        and "irrelevance" in str(err.value)
    )


def test_invalid_tool_schema_is_reported():
    broken = {"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}
    with pytest.raises(ItemError, match="tools.f.parameters: not a valid JSON Schema"):
        validate_item(item([], "irrelevance", tools=(broken,)))


def test_cli_validate_tools(tmp_path):
    from typer.testing import CliRunner

    from aetheris.cli import app

    good = write(tmp_path, [raw()])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(raw(gold=[{"name": "send_cash", "arguments": {}}])) + "\n")
    ok = CliRunner().invoke(app, ["validate-tools", str(good)])
    assert ok.exit_code == 0 and "1 items" in ok.output
    fail = CliRunner().invoke(app, ["validate-tools", str(good), str(bad)])
    assert fail.exit_code == 2 and "bad.jsonl:1" in fail.output and "'send_cash'" in fail.output
