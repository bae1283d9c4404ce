"""Prompts: the model's own tool template when it has one, the documented fallback otherwise."""

import pytest
from toolcall_tiny import tool_tokenizer

from aetheris.data.chat import FALLBACK_CHAT_TEMPLATE
from aetheris.toolcall.checker import check
from aetheris.toolcall.format import GoldCall, ToolItem
from aetheris.toolcall.prompting import FALLBACK_INSTRUCTIONS, render_prompt, supports_tools, turn_stops

TOOLS_TEMPLATE = (
    "{%- if tools %}<|system|>You may call: "
    "{% for t in tools %}{{ t.function.name }}={{ t | tojson }} {% endfor %}<|end|>"
    "{%- endif %}"
    "{%- for m in messages %}<|{{ m.role }}|>{{ m.content or '' }}"
    "{%- for c in m.tool_calls or [] %}"
    "<tool_call>{{ c.function.name }}:{{ c.function.arguments.city }}</tool_call>"
    "{%- endfor %}<|end|>{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{% endif %}"
)
PLAIN_TEMPLATE = (
    "{%- for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{% endif %}"
)
NO_SYSTEM_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    + PLAIN_TEMPLATE
)


def byte_tokenizer(template=None):
    texts = ['<tool_call>{"name": "weather", "arguments": {}}</tool_call>', "hali ya hewa"]
    return tool_tokenizer(texts, vocab_size=320, template=template)


WEATHER = {
    "type": "function",
    "function": {
        "name": "weather_forecast",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ITEM = ToolItem(
    id="w",
    lang="sw",
    category="simple",
    tools=[WEATHER],
    messages=[
        {"role": "system", "content": "Wewe ni msaidizi."},
        {"role": "user", "content": "Hali ya hewa Nairobi na Mombasa?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": "weather_forecast", "arguments": '{"city": "Nairobi"}'},
                }
            ],
        },
        {"role": "tool", "content": '{"temperature": 25}'},
    ],
    gold=[GoldCall(name="weather_forecast", arguments={"city": ["Mombasa"]})],
)


def test_tools_aware_template_renders_natively():
    tok = byte_tokenizer(TOOLS_TEMPLATE)
    assert supports_tools(tok)
    text = render_prompt(tok, ITEM)
    assert text.startswith("<|system|>You may call: weather_forecast=")
    # arguments given as a JSON string reach the template as a mapping
    assert "<tool_call>weather_forecast:Nairobi</tool_call>" in text
    assert "<|tool|>" in text and text.endswith("<|assistant|>")
    assert "<tool_call>{" not in text  # not the fallback


@pytest.mark.parametrize("template", [PLAIN_TEMPLATE, NO_SYSTEM_TEMPLATE, None])
def test_fallback_lists_tools_and_asks_for_tool_call_lines(template):
    tok = byte_tokenizer(template)
    assert not supports_tools(tok)
    text = render_prompt(tok, ITEM)
    assert FALLBACK_INSTRUCTIONS.splitlines()[0] in text and '"name": "weather_forecast"' in text
    assert "Wewe ni msaidizi." in text  # the item's own system text is kept, before the tool list
    assert '<tool_call>{"name": "weather_forecast", "arguments": {"city": "Nairobi"}}</tool_call>' in text
    assert '<tool_response>\n{"temperature": 25}\n</tool_response>' in text
    if template is None:
        assert text.startswith("System: ") and text.endswith("Assistant:")
    else:
        assert text.endswith("<|assistant|>")
        assert text.startswith("<|system|>" if template == PLAIN_TEMPLATE else "<|user|>")


def test_a_reply_in_the_fallback_format_is_read_by_the_checker():
    reply = '<tool_call>{"name": "weather_forecast", "arguments": {"city": "Mombasa"}}</tool_call>'
    assert check(ITEM, reply).passed


@pytest.mark.parametrize(
    ("template", "stops"),
    [
        (None, ["\n\nSystem:", "\n\nUser:", "\n\nAssistant:", "\n\nTool:"]),
        # end of turn, then the assistant and user headers
        (PLAIN_TEMPLATE, ["<|end|>", "<|assistant|>", "<|user|>"]),
        (FALLBACK_CHAT_TEMPLATE, ["<|end|>", "<|assistant|>", "<|user|>"]),  # what a base model is SFT'd with
    ],
)
def test_turn_stops_end_the_assistant_turn_of_the_rendering(template, stops):
    tok = byte_tokenizer(template)
    assert turn_stops(tok) == stops
    prompt = render_prompt(tok, ITEM)
    # the model's next turn in this format begins with one of the stops
    assert any(s.strip() in prompt for s in stops)
