"""The `tools` task end to end through the harness on a tiny random Llama: every item scored,
failures categorised; and on other items than the package's (Nodehaus)."""

import json
import os
from pathlib import Path

import pytest
import torch
from toolcall_tiny import tool_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from aetheris.eval.lm import HFLM
from aetheris.eval.results import load_results
from aetheris.eval.runner import evaluate_model, plan_languages, run
from aetheris.eval.tasks.tools import ToolsTask
from aetheris.toolcall.checker import CATEGORIES
from aetheris.toolcall.format import OMIT, GoldCall, ToolItem
from aetheris.toolcall.loaders import load_nodehaus
from aetheris.toolcall.prompting import render_prompt


def data_dir() -> Path:
    env = os.environ.get("AETHERIS_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


NODEHAUS = data_dir() / "tool_calling" / "nodehaus_weather_agent_7lang"
TEMPLATE = (
    "{%- for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    texts = ['<tool_call>{"name": "weather_forecast"}</tool_call>', "What is the weather?"]
    return tool_tokenizer(texts, vocab_size=300, template=TEMPLATE)


@pytest.fixture(scope="module")
def items():
    if not NODEHAUS.is_dir():
        pytest.skip(f"Nodehaus data not found at {NODEHAUS}")
    loaded = load_nodehaus(NODEHAUS, langs=("en", "de"))
    # per language: an off-topic request, a first call, a follow-up call after a tool result
    pick = []
    for lang in ("en", "de"):
        mine = [i for i in loaded if i.lang == lang]
        pick += [i for i in mine if not i.gold][:1]
        pick += [i for i in mine if i.gold and i.messages[-1].role == "user"][:1]
        pick += [i for i in mine if i.messages[-1].role == "tool"][:1]
    return pick


def evaluate(lm, items, out: Path, max_new_tokens: int):
    """The results file of `items` scored by `lm` through the harness, read back and validated."""
    task = ToolsTask(items)
    task.max_new_tokens = max_new_tokens
    result = evaluate_model(lm, "tiny/llama", [task], plan_languages([task], ["en", "de"]), out)
    return load_results(result["path"]).tasks["tools"]


def test_tiny_random_llama_every_item_scored(tokenizer, items, tmp_path):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    block = evaluate(HFLM(model, tokenizer, batch_size=2), items, tmp_path, max_new_tokens=8)
    assert block.metric == "acc" and block.higher_is_better is True
    assert set(block.languages) == {"en", "de"}
    for lang, result in block.languages.items():
        records = [r.model_dump() for r in result.items]
        assert result.n == len(records) == 3
        assert [r["id"] for r in records] == [i.id for i in items if i.lang == lang]
        assert result.score == pytest.approx(sum(r["score"] for r in records) / 3)
        failed = [r for r in records if r["score"] == 0.0]
        assert all(r["category"] in CATEGORIES for r in failed)
        assert all(r["category"] is None for r in records if r["score"] == 1.0)
        assert [r["kind"] for r in records] == [i.category for i in items if i.lang == lang]
        # garbage text holds no call: the two items that need one fail
        assert sum(r["category"] in ("no_call", "invalid_json") for r in records) == 2
    assert tokenizer.pad_token is None and tokenizer.padding_side == "right"  # left untouched


class Scripted:
    """An LM whose replies are fixed per prompt: only generation is replaced."""

    def __init__(self, tokenizer, replies: dict[str, str]) -> None:
        self.tokenizer, self.replies, self.batch_size = tokenizer, replies, 2

    def generate(self, prompts, stop, max_new_tokens, rendered=False):
        assert rendered and stop == ["<|end|>", "<|assistant|>", "<|user|>"]  # the template's own text, up to its end of turn
        return [self.replies[p] for p in prompts]


def gold_reply(item: ToolItem) -> str:
    calls = [
        {"name": g.name, "arguments": {p: vs[0] for p, vs in g.arguments.items() if vs[0] != OMIT}}
        for g in item.gold
    ]
    return "\n".join(f"<tool_call>{json.dumps(c, ensure_ascii=False)}</tool_call>" for c in calls) or "Sorry."


def test_scoring_credits_right_calls_and_spots_wrong_language(items, tokenizer, tmp_path):
    # The German items answer with the English values (the Munich one: the English city), the rest with gold.
    english = {i.id: i for i in items if i.lang == "en"}
    munich_de = ToolItem(
        id="munich",
        lang="de",
        category="simple",
        tools=[items[0].tools[0]],
        messages=[{"role": "user", "content": "Wetter in München morgen?"}],
        gold=[GoldCall(name="weather_forecast", arguments={"city": ["München"], "date": ["2024-05-02"]})],
    )
    munich_en = munich_de.model_copy(
        update={
            "lang": "en",
            "gold": [
                GoldCall(name="weather_forecast", arguments={"city": ["Munich"], "date": ["2024-05-02"]})
            ],
        }
    )
    everything = [*items, munich_de, munich_en]
    replies: dict[str, str] = {}
    for i in everything:
        reply = gold_reply(munich_en if i is munich_de else english.get(i.id, i) if i.lang == "de" else i)
        assert replies.setdefault(render_prompt(tokenizer, i), reply) == reply  # a prompt has one reply
    block = evaluate(Scripted(tokenizer, replies), everything, tmp_path, max_new_tokens=4)
    assert block.languages["en"].score == 1.0
    de = {r.id: r.model_dump() for r in block.languages["de"].items}
    assert de["munich"] == {
        "id": "munich",
        "score": 0.0,
        "category": "wrong_language_value",
        "kind": "simple",
        "output": gold_reply(munich_en),
    }
    assert sum(r["category"] == "wrong_language_value" for r in de.values()) >= 1


def test_bad_arguments_are_refused(tokenizer, items, tmp_path):
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        HFLM(
            LlamaForCausalLM(
                LlamaConfig(
                    vocab_size=len(tokenizer),
                    hidden_size=16,
                    num_hidden_layers=1,
                    num_attention_heads=2,
                    intermediate_size=32,
                )
            ),
            tokenizer,
            batch_size=0,
        )
    for option in ("batch_size", "max_new_tokens"):  # refused before any model is loaded
        with pytest.raises(ValueError, match=f"{option} must be >= 1, got 0"):
            run(["/no/such/model"], ["tools"], tmp_path, **{option: 0})
    with pytest.raises(ValueError, match=f"item id {items[0].id!r} appears twice for language 'en'"):
        ToolsTask([items[0], items[0]])


def test_reply_ends_at_the_turns_end(items, tokenizer, tmp_path):
    # A base model writes on past its turn: the next user turn and more calls. Only its own turn
    # is the answer; read to the end, the right call would fail as wrong_count.
    pick = [next(i for i in items if i.gold and i.lang == lang) for lang in ("en", "de")]
    replies = {}
    for item in pick:
        extra = gold_reply(item.model_copy(update={"gold": item.gold[:1]}))
        replies[render_prompt(tokenizer, item)] = f"{gold_reply(item)}<|assistant|>{extra}<|end|>"
    block = evaluate(Scripted(tokenizer, replies), pick, tmp_path, max_new_tokens=4)
    for item in pick:
        (row,) = block.languages[item.lang].items
        assert row.score == 1.0 and row.output == gold_reply(item)
