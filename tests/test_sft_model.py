"""The SFT-any-model recipe (aetheris.distill.sft_model) on a tiny random Gemma 3 with a tiny
tokenizer: the assistant-only CE with the head on labelled positions equals transformers' own
loss; a run learns its chats, saves a folder that loads, keeps the fallback template and whose
tool-call prompts stop at the turn's end; bad configs name the key."""

import json

import pytest
import torch
from tiny_teachers import tiny_model
from toolcall_tiny import tool_tokenizer

from aetheris.data.chat import FALLBACK_CHAT_TEMPLATE, ensure_chat_template, render_chat
from aetheris.distill.config import ConfigError
from aetheris.distill.sft_model import assistant_ce, collate, load_sft_config, run_sft
from aetheris.toolcall.prompting import turn_stops

WEATHER = {"type": "function", "function": {"name": "weather", "description": "Weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}  # fmt: skip
CITIES = ["Paris", "Lagos", "Tokyo", "Lima"]


def chat(city: str) -> dict:
    return {"lang": "en", "tools": [WEATHER], "messages": [
        {"role": "user", "content": f"Weather in {city}?"},
        {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "weather", "arguments": {"city": city}}}]},
    ]}  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    tok = tool_tokenizer([json.dumps(chat(c)) for c in CITIES] + [FALLBACK_CHAT_TEMPLATE], vocab_size=400)
    ensure_chat_template(tok)
    return tok


@pytest.fixture(scope="module")
def folder(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-gemma3")
    tiny_model("gemma3", vocab_size=len(tokenizer), tie_word_embeddings=True, final_logit_softcapping=None).save_pretrained(path)
    tok = tool_tokenizer([json.dumps(chat(c)) for c in CITIES] + [FALLBACK_CHAT_TEMPLATE], vocab_size=400)
    tok.save_pretrained(path)  # saved without a template, like a base model
    return path


def test_assistant_ce_equals_the_full_head_loss(tokenizer, folder):
    model = tiny_model("gemma3", vocab_size=len(tokenizer), tie_word_embeddings=True, final_logit_softcapping=None)
    rows = [{k: torch.tensor(v) for k, v in render_chat(tokenizer, c["messages"], c["tools"]).items()}
            for c in map(chat, CITIES[:2])]  # fmt: skip
    batch = collate(tokenizer.eos_token_id)(rows)
    assert (batch["labels"] != -100).sum() < batch["labels"].numel() / 3  # most positions skip the head
    ours = assistant_ce(model, batch)["loss"]
    theirs = model(**batch).loss
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def write_config(tmp_path, folder, data, steps=30, **extra) -> str:
    cfg = {"model": str(folder), "data": [str(data)], "max_length": 512,
           "train": {"steps": steps, "batch_size": 2, "lr": 3e-3, "log_every": 5, "checkpoint_every": 15},
           "output_dir": str(tmp_path / "out"), **extra}  # fmt: skip
    path = tmp_path / "sft.yaml"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_run_learns_the_chats_and_saves_a_loadable_model(folder, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(chat(c)) + "\n" for c in CITIES))
    # a random tiny head is too weak to learn through when frozen: train it here
    out = run_sft(load_sft_config(write_config(tmp_path, folder, data, freeze_embeddings=False)))
    note = json.loads((out / "sft.json").read_text())
    assert note["conversations"] == 4 and note["optimizer_steps"] == 30 and note["epochs"] == 15
    losses = [json.loads(line)["loss"] for line in (tmp_path / "out" / "run" / "metrics.jsonl").open()]
    assert losses[-1] < 0.5 * losses[0]
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == FALLBACK_CHAT_TEMPLATE and turn_stops(tok) == ["<|end|>", "<|assistant|>", "<|user|>"]
    model = AutoModelForCausalLM.from_pretrained(out)
    prompt = tok.apply_chat_template(chat("Paris")["messages"][:1], tools=[WEATHER], tokenize=False,
                                     add_generation_prompt=True)  # fmt: skip
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    reply = tok.decode(model.generate(ids, max_new_tokens=24, do_sample=False)[0, ids.shape[1]:])
    assert reply.startswith("<tool_call>")  # it answers in the call format it was taught


def test_embeddings_are_frozen_by_default(folder, tmp_path):
    from transformers import AutoModelForCausalLM

    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps(chat("Lima")) + "\n")
    out = run_sft(load_sft_config(write_config(tmp_path, folder, data, steps=2)))
    model, before = AutoModelForCausalLM.from_pretrained(out), AutoModelForCausalLM.from_pretrained(folder)
    assert torch.equal(model.get_input_embeddings().weight, before.get_input_embeddings().weight)
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, before.model.layers[0].mlp.up_proj.weight)


def test_bad_config_names_the_key(folder, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.lr: required key is missing"):
        load_sft_config(write_config(tmp_path, folder, "x.jsonl", train={"steps": 1, "batch_size": 1}))
    with pytest.raises(ConfigError, match=r"data: unknown built-in chat source\(s\) \['embedded:tool'\]"):
        load_sft_config(write_config(tmp_path, folder, "embedded:tool"))
    with pytest.raises(ConfigError, match="dtype: expected one of float32"):
        load_sft_config(write_config(tmp_path, folder, "x.jsonl", dtype="fp8"))


def test_cli_bad_config_is_one_line_exit_2(folder, tmp_path):
    from typer.testing import CliRunner

    from aetheris.cli import app

    cfg = write_config(tmp_path, folder, "x.jsonl", dtype="fp8")
    result = CliRunner().invoke(app, ["sft-model", str(cfg)])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"Error: {cfg}: dtype: expected one of float32")


def test_the_shipped_config_validates():
    from pathlib import Path

    cfg = load_sft_config(Path(__file__).resolve().parents[1] / "configs" / "sft-tools-gemma3-270m.yaml")
    assert cfg.train.steps > 0


def test_region_keeps_the_regions_chats(folder, tmp_path):
    """`region` / `languages` restrict an SFT-any-model run as sft.region does a student's."""
    data = tmp_path / "chats.jsonl"
    langs = {"Paris": "fr", "Lagos": "yo", "Tokyo": "ja", "Lima": "es"}
    data.write_text("".join(json.dumps({**chat(c), "lang": langs[c]}) + "\n" for c in CITIES))
    out = run_sft(load_sft_config(write_config(tmp_path, folder, data, steps=2, region="Africa")))
    note = json.loads((out / "sft.json").read_text())
    assert note["region"] == "Africa" and note["conversations"] == 1
    out = run_sft(load_sft_config(write_config(tmp_path, folder, data, steps=2, languages=["fra", "es"],
                                               output_dir=str(tmp_path / "two"))))  # fmt: skip
    assert json.loads((out / "sft.json").read_text())["conversations"] == 2
    with pytest.raises(ValueError, match="sft-model.region 'West Asia': none of the 4 chats"):
        run_sft(load_sft_config(write_config(tmp_path, folder, data, steps=2, region="West Asia",
                                             output_dir=str(tmp_path / "none"))))  # fmt: skip
    with pytest.raises(ConfigError, match="set region or languages, not both"):
        load_sft_config(write_config(tmp_path, folder, data, region="Africa", languages=["sw"]))


def test_a_distilled_student_folder_is_fine_tuned_too(tokenizer, tmp_path):
    """The recipe's base may be an Aetheris student (issue 16: the student before and after SFT);
    its routers' balancing loss is part of the training loss."""
    from aetheris import AetherisConfig, AetherisForCausalLM

    folder = tmp_path / "student"
    torch.manual_seed(0)
    AetherisForCausalLM(AetherisConfig(vocab_size=len(tokenizer), hidden_size=32, layout="SMAM", num_attention_heads=4,
                                       num_key_value_heads=2, moe_intermediate_size=16, ssm_chunk_size=8,
                                       tie_word_embeddings=True)).save_pretrained(folder)  # fmt: skip
    tokenizer.save_pretrained(folder)
    model = AetherisForCausalLM.from_pretrained(folder).train()
    rows = [{k: torch.tensor(v) for k, v in render_chat(tokenizer, c["messages"], c["tools"]).items()}
            for c in map(chat, CITIES[:2])]  # fmt: skip
    batch = collate(tokenizer.eos_token_id)(rows)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    plain = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten())
    assert out.router_loss > 0 and torch.allclose(assistant_ce(model, batch)["loss"], plain + out.router_loss, atol=1e-5)
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(chat(c)) + "\n" for c in CITIES))
    saved = run_sft(load_sft_config(write_config(tmp_path, folder, data, steps=3)))
    assert isinstance(AetherisForCausalLM.from_pretrained(saved), AetherisForCausalLM)
    assert json.loads((saved / "sft.json").read_text())["optimizer_steps"] == 3
