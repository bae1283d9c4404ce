"""The project's own tool-calling items through the project's own format and checker."""

import json
from pathlib import Path

import pytest

from aetheris.toolcall.checker import check
from aetheris.toolcall.format import read_items

DATA = Path(__file__).resolve().parents[1] / "src" / "aetheris" / "data" / "toolcall"


@pytest.mark.parametrize("split", ["eval", "train"])
def test_every_item_validates_and_its_gold_passes_the_checker(split):
    items = read_items(DATA / f"{split}.jsonl")  # validates every item against its schemas
    assert len({i.lang for i in items}) == 70
    for item in items:
        calls = [{"name": g.name, "arguments": {k: v[0] for k, v in g.arguments.items() if v[0] != ""}}
                 for g in item.gold]  # fmt: skip
        reply = f"<tool_call>{json.dumps(calls)}</tool_call>" if calls else "No tool fits this request."
        result = check(item, reply)
        assert result.passed, (item.id, item.lang, result)
        if calls:  # and a wrong function name fails, with its category
            calls[0]["name"] = "no_such_function"
            assert check(item, json.dumps(calls)).category == "wrong_function"
