"""Chat rendering: assistant tokens (tool calls included) labelled, everything else -100."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from aetheris.data.chat import IGNORE, ChatTemplateError, chat_batches, render_chat
from aetheris.data.sources import LoadSummary, embedded_corpus

# ChatML with tool support, in the style of Qwen2.5's template: tools listed in the system turn,
# assistant tool calls as <tool_call> JSON, tool results fed back as a user turn.
CHATML_TOOLS = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' + (message.content or '') }}"
    "{%- for call in message.tool_calls or [] %}"
    "{{- '<tool_call>\\n{\"name\": \"' + call.function.name + '\", \"arguments\": ' }}"
    "{{- call.function.arguments | tojson }}{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- elif message.role != 'system' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

TOOL_CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hali ya hewa ikoje Nairobi leo?"},
    {"role": "assistant", "content": "",
     "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Nairobi"}}}]},
    {"role": "tool", "content": "{\"temp_c\": 22, \"sky\": \"cloudy\"}"},
    {"role": "assistant", "content": "Nairobi ina nyuzi 22 na mawingu leo."},
]


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    texts = [e.text for e in embedded_corpus("text")[::7]] + [CHATML_TOOLS, str(TOOL_CHAT)]
    model = Tokenizer(models.BPE())
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    model.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TOOLS
    return tokenizer


def _labelled(tok, out) -> str:
    return tok.decode([t for t in out["labels"] if t != IGNORE])


def _masked(tok, out) -> str:
    return tok.decode([i for i, t in zip(out["input_ids"], out["labels"]) if t == IGNORE])


def test_only_the_assistant_turn_is_labelled(tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Bonjour !"},
            {"role": "assistant", "content": "Bonjour, comment puis-je vous aider ?"}]
    out = render_chat(tok, msgs)
    assert tok.decode(out["input_ids"]) == tok.apply_chat_template(msgs, tokenize=False)
    assert _labelled(tok, out) == "Bonjour, comment puis-je vous aider ?<|im_end|>\n"
    masked = _masked(tok, out)
    assert "Be brief." in masked and "Bonjour !" in masked and masked.endswith("<|im_start|>assistant\n")
    assert len(out["labels"]) == len(out["input_ids"]) == len(out["attention_mask"])


def test_tool_calls_are_labelled_and_tool_results_masked(tok):
    out = render_chat(tok, TOOL_CHAT, tools=[WEATHER_TOOL])
    labelled, masked = _labelled(tok, out), _masked(tok, out)
    assert labelled == ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Nairobi"}}\n</tool_call>'
                        "<|im_end|>\nNairobi ina nyuzi 22 na mawingu leo.<|im_end|>\n")
    assert "get_weather" in masked and "Current weather in a city." in masked  # the tool definition
    assert "temp_c" in masked and "temp_c" not in labelled  # the tool's answer is input, not target
    assert "Hali ya hewa" in masked and "You are a helpful assistant." in masked


def test_slow_tokenizer_path_agrees_with_offsets(tok):
    class Slow:  # same tokenizer, but forces the token-count diff instead of offsets
        is_fast = False

        def __getattr__(self, name):
            return getattr(tok, name)

        def __call__(self, *args, **kwargs):
            return tok(*args, **kwargs)

    assert render_chat(Slow(), TOOL_CHAT, tools=[WEATHER_TOOL]) == render_chat(tok, TOOL_CHAT, tools=[WEATHER_TOOL])


def test_template_that_rewrites_history_is_refused(tok):
    saved = tok.chat_template
    tok.chat_template = "{{ messages | length }}" + CHATML_TOOLS  # turn count at the top changes every prefix
    try:
        with pytest.raises(ChatTemplateError, match="not prefix-stable at message 1"):
            render_chat(tok, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
        tok.chat_template = None
        with pytest.raises(ChatTemplateError, match="has no chat_template"):
            render_chat(tok, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    finally:
        tok.chat_template = saved


def test_chat_batches_over_the_embedded_chats(tok):
    chats = embedded_corpus("chat")[:10]  # includes tool-calling chats, rendered with their tools
    assert any(c.tools for c in chats)
    batches = list(chat_batches(chats, tok, batch_size=4, max_length=2048))
    assert [b["input_ids"].shape[0] for b in batches] == [4, 4, 2]
    for batch in batches:
        assert bool((batch["labels"][batch["attention_mask"] == 0] == IGNORE).all())
        assert bool(((batch["labels"] != IGNORE).sum(1) > 0).all())  # every chat has a target
    assert batches[0]["langs"] == [c.lang for c in chats[:4]]
    # cut so short that tool-calling chats (long tool definitions first) lose every target token
    summary = LoadSummary()
    short = list(chat_batches(chats, tok, batch_size=4, max_length=80, summary=summary))
    assert 1 <= summary.skipped["no_target_after_truncation"] < 10
    assert sum(b["input_ids"].shape[0] for b in short) == 10 - summary.n_skipped
    assert all(b["input_ids"].shape[1] <= 80 for b in short)
    with pytest.raises(ValueError, match="needs chat examples"):
        next(chat_batches(embedded_corpus("text")[:1], tok, batch_size=1))


def test_prefix_method_agrees_with_generation_marks(tok):
    # The same template with {% generation %} around each assistant turn: transformers then reports
    # assistant tokens itself, and the prefix method must find exactly those tokens.
    marked = CHATML_TOOLS.replace(
        "{{- '<|im_start|>assistant\\n' + (message.content or '') }}",
        "{{- '<|im_start|>assistant\\n' }}{%- generation %}{{- message.content or '' }}",
    ).replace("{{- '<|im_end|>\\n' }}{%- elif message.role == 'tool' %}",
              "{{- '<|im_end|>\\n' }}{%- endgeneration %}{%- elif message.role == 'tool' %}")
    assert marked.count("generation %}") == 2
    saved = tok.chat_template
    tok.chat_template = marked
    try:
        ref = tok.apply_chat_template(TOOL_CHAT, tools=[WEATHER_TOOL], tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
        out = render_chat(tok, TOOL_CHAT, tools=[WEATHER_TOOL])
    finally:
        tok.chat_template = saved
    assert out["input_ids"] == list(ref["input_ids"])
    assert [int(t != IGNORE) for t in out["labels"]] == list(ref["assistant_masks"])
    assert sum(ref["assistant_masks"]) > 10


def test_chat_batches_from_a_sampler_resume_exactly(tok):
    from aetheris.data.mixture import MixtureSampler

    chats = embedded_corpus("chat")[:30]
    sampler = MixtureSampler(chats, seed=2)
    batches = chat_batches(sampler, tok, batch_size=2)
    next(batches)
    state = sampler.state_dict()  # chat_batches holds nothing between batches: this is the position
    want = [next(batches) for _ in range(3)]
    fresh = MixtureSampler(chats, seed=2)
    fresh.load_state_dict(state)
    got = [b for b, _ in zip(chat_batches(fresh, tok, batch_size=2), range(3))]
    assert [b["langs"] for b in got] == [b["langs"] for b in want]
    assert all(g["input_ids"].equal(w["input_ids"]) and g["labels"].equal(w["labels"]) for g, w in zip(got, want))


def test_fallback_template_renders_tools_and_calls_for_the_checker():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from aetheris.data.chat import ensure_chat_template, render_chat
    from aetheris.toolcall.checker import parse_calls

    raw = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[UNK]")
    assert ensure_chat_template(tok) and not ensure_chat_template(tok)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    msgs = [{"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                "name": "get_weather", "arguments": {"city": "Oslo"}}}]}]  # fmt: skip
    text = tok.apply_chat_template(msgs, tools=tools, tokenize=False)
    assert "get_weather" in text.split("<|user|>")[0]  # tools listed before the conversation
    reply = text.split("<|assistant|>\n")[1]
    assert parse_calls(reply)[0].name == "get_weather"
    out = render_chat(tok, msgs, tools=tools)
    assert any(label != -100 for label in out["labels"])
