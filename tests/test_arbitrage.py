"""aetheris arbitrage: arbiters, checks, resume and the SFT-readable output, on tiny random models."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
import yaml
from eval_tiny import save_tiny_pool, tiny_tokenizer
from typer.testing import CliRunner

from aetheris.arbitrage.arbiters import build_arbiter, parse_arbiter
from aetheris.arbitrage.checks import Checker, assistant_message
from aetheris.arbitrage.config import Checks, Generation, Prompts, RunSettings, parse_settings
from aetheris.arbitrage.lid import LanguageChecker, committed_mapping, mapping_document
from aetheris.arbitrage.pool import Candidate, Member
from aetheris.arbitrage.prompts import load_prompts
from aetheris.arbitrage.run import decide, run_arbitrage, sidecar
from aetheris.cli import app
from aetheris.data.chat import ensure_chat_template, render_chat
from aetheris.data.sources import embedded_corpus, read_sources
from aetheris.errors import UserError
from aetheris.eval.lm import HFLM

# Lingua 2.1 has no model for these Tiny Aya languages (yue is left out on purpose: lingua's
# CHINESE would pass Mandarin replies to Cantonese prompts). Changing it means updating
# data/lid_lingua.json and the README/notes that list them.
LACKING = ["am", "gl", "ha", "ig", "jv", "km", "lo", "mg", "mt", "my", "ne", "pcm", "wo", "yue"]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [m["content"] for ex in embedded_corpus("chat") for m in ex.messages if m.get("content")]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return save_tiny_pool(tmp_path_factory)


@pytest.fixture(scope="module")
def members(folders):
    return [Member(name, HFLM.load(str(path), dtype="float32")) for name, path in folders.items()]


def prompts_for(langs, per_language=1, tools=True, chats=True):
    return load_prompts(Prompts(tools=["embedded"] if tools else [], chats=["embedded:chat"] if chats else [],
                                languages=langs, per_language=per_language))  # fmt: skip


def settings_for(folders, langs, **over) -> RunSettings:
    raw = {"pool": [{"model": str(p), "name": n} for n, p in folders.items()],
           "prompts": {"tools": ["embedded"], "chats": ["embedded:chat"], "languages": langs, "per_language": 1},
           "generation": {"max_new_tokens": 6, "batch_size": 4}, "checks": {"language_id": False}} | over  # fmt: skip
    return parse_settings(raw)[0]


# ---------------------------------------------------------------- language ID


def test_lingua_mapping_is_the_committed_one():
    doc, committed = mapping_document(), committed_mapping()
    assert doc["mapping"] == committed["mapping"]
    assert doc["lacking"] == committed["lacking"] == LACKING
    assert len(doc["mapping"]) == 70


def test_lid_rejects_a_reply_in_another_language():
    lid = LanguageChecker(min_chars=20, accuracy="low")  # high accuracy: same answers, 25 s to load
    assert lid.check("Das Wetter in Berlin ist heute sonnig und warm, wir gehen spazieren.", "de").status == "pass"
    wrong = lid.check("The weather in Berlin is sunny and warm today, let us go for a walk.", "de")
    assert wrong.status == "fail" and wrong.detected == "en"
    assert lid.check("ሰላም ነው፣ ዛሬ አየሩ ጥሩ ነው እና ፀሐያማ ነው።", "am").status == "skipped"  # lingua lacks Amharic
    assert lid.check("Ja, gut.", "de").status == "skipped"  # too short to tell


# ---------------------------------------------------------------- checks


def test_checker_rejects_a_malformed_tool_call_and_keeps_a_right_one():
    prompt = next(p for p in prompts_for(["de"], per_language=20, chats=False) if p.item.category == "simple")
    gold = prompt.item.gold[0]
    args = {k: v[0] for k, v in gold.arguments.items() if v[0] != ""}
    checker = Checker(Checks(lid_accuracy="low"))
    bad = checker(prompt, '<tool_call>{"name": "' + gold.name + '", "arguments": {oops}</tool_call>')
    assert not bad.passed and bad.tool["category"] == "invalid_json"
    wrong = checker(prompt, json.dumps({"name": "no_such_function", "arguments": args}))
    assert not wrong.passed and wrong.tool["category"] == "wrong_function"
    good_text = "<tool_call>" + json.dumps({"name": gold.name, "arguments": args}) + "</tool_call>"
    good = checker(prompt, good_text)
    assert good.passed and good.lid["status"] == "skipped"  # tool calls carry no prose to identify
    message = assistant_message(good, good_text)
    assert message["tool_calls"][0]["function"] == {"name": gold.name, "arguments": args}


# ---------------------------------------------------------------- arbiters


def _independent_loglik_per_byte(member: Member, prompt, reply: str) -> float:
    """log p(reply | prompt) / bytes by a plain forward pass, not through HFLM's batching."""
    tok = member.lm.tokenizer
    text = member.render(prompt)
    ctx = tok.encode(text, add_special_tokens=not text.startswith(tok.bos_token))
    cont = tok.encode(reply, add_special_tokens=False)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(member.lm.model(ids).logits[0].float(), -1)
    total = sum(float(logp[len(ctx) + i - 1, t]) for i, t in enumerate(cont))
    return total / len(reply.encode("utf-8"))


def test_likelihood_picks_what_the_pool_finds_more_likely(members):
    prompt = prompts_for(["sw"], tools=False)[0]
    gen = Generation(max_new_tokens=12, stop=[])
    greedy = members[0].generate([prompt], gen)[0][0]
    assert greedy.strip()
    rng = random.Random(0)
    shuffled = "".join(rng.sample(greedy, len(greedy)))  # same bytes, an order the model did not choose
    cands = [Candidate("tiny-b", shuffled), Candidate("tiny-a", greedy)]
    arbiter = build_arbiter(parse_arbiter({"name": "likelihood"}, ["tiny-a", "tiny-b"]))
    # A pool of one: the model's own greedy reply is more likely than its shuffle.
    (scores,) = arbiter.score([(prompt, cands)], members[:1])
    row = decide(prompt, cands, scores, [Checker(Checks(language_id=False))(prompt, c.text) for c in cands],
                 "likelihood")  # fmt: skip
    assert row["arbitrage"]["winner"] == "tiny-a"
    assert row["messages"][-1] == {"role": "assistant", "content": greedy.strip()}
    # The pool of two: the score is the mean of each model's per-byte log-likelihood.
    (scores,) = arbiter.score([(prompt, cands)], members)
    for cand, sc in zip(cands, scores, strict=True):
        each = [_independent_loglik_per_byte(m, prompt, cand.text) for m in members]
        assert sc["loglik_per_byte"] == pytest.approx(dict(zip(["tiny-a", "tiny-b"], each)), rel=1e-4, abs=1e-4)
        assert sc["score"] == pytest.approx(sum(each) / 2, rel=1e-4, abs=1e-4)


def test_checks_come_before_the_score():
    prompt = prompts_for(["de"], tools=False)[0]
    cands = [Candidate("a", "The weather is fine today and I will go for a long walk outside."),
             Candidate("b", "Das Wetter ist heute schön und ich gehe draußen lange spazieren.")]  # fmt: skip
    checker = Checker(Checks(lid_accuracy="low"))
    row = decide(prompt, cands, [{"score": 0.0}, {"score": -5.0}], [checker(prompt, c.text) for c in cands], "x")
    assert row["arbitrage"]["winner"] == "b"  # the better score is English: LID rejects it
    assert row["arbitrage"]["candidates"][0]["checks"]["lid"]["status"] == "fail"
    user = prompt.messages[-1]["content"]
    assert checker(prompt, user + " ").reason.startswith("echoes the request")
    assert checker(prompt, "Hallo <|assistant|>\n<|assistant|>").reason == "chat markup '<|assistant|>' in the reply"
    none = decide(prompt, cands[:1], [{"score": 0.0}], [checker(prompt, cands[0].text)], "x")
    assert none["arbitrage"]["winner"] is None


def _results(path, name, scores, higher=True):
    langs = {lang: {"score": s, "n": 1, "items": [{"id": "x", "score": s}]} for lang, s in scores.items()}
    path.write_text(json.dumps({"schema": "aetheris.results/1", "model": name, "model_name": name,
                                "tasks": {"tools": {"metric": "acc", "higher_is_better": higher,
                                                    "languages": langs}}}))  # fmt: skip
    return str(path)


def test_fixed_routes_each_language_to_its_best_model(tmp_path, members):
    results = {"tiny-a": _results(tmp_path / "a.json", "tiny-a", {"de": 0.9, "sw": 0.1, "fr": 0.5}),
               "tiny-b": _results(tmp_path / "b.json", "tiny-b", {"de": 0.2, "sw": 0.6})}  # fmt: skip
    arbiter = build_arbiter(parse_arbiter({"name": "fixed", "results": results}, ["tiny-a", "tiny-b"]))
    arbiter.prepare(members)
    by_lang = {p.lang: p for p in prompts_for(["de", "sw", "ja"], tools=False)}
    assert [m.label for m in arbiter.generators(by_lang["de"], members)] == ["tiny-a"]
    assert [m.label for m in arbiter.generators(by_lang["sw"], members)] == ["tiny-b"]
    # ja is in neither file: the best mean (a: 0.5, b: 0.4) answers
    assert [m.label for m in arbiter.generators(by_lang["ja"], members)] == ["tiny-a"]
    (scores,) = arbiter.score([(by_lang["sw"], [Candidate("tiny-b", "x")])], members)
    assert "tiny-b 0.6" in scores[0]["route"]
    with pytest.raises(UserError, match="not pool labels"):
        parse_arbiter({"name": "fixed", "results": {"other": results["tiny-a"]}}, ["tiny-a"])


def test_reward_classifier_and_judge_rank_by_the_model(tmp_path, texts, folders):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = tiny_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64, num_labels=1, pad_token_id=tok.pad_token_id,
                      initializer_range=0.5)  # fmt: skip
    rm = LlamaForSequenceClassification(cfg).eval()
    with torch.no_grad():
        rm.score.weight.normal_(0, 1.0)  # a reward head that is not all zeros
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    prompt = prompts_for(["fr"], tools=False)[0]
    cands = [Candidate("a", "Bonjour, voici une réponse courte."), Candidate("b", "Une autre réponse, plus longue que la première.")]
    for raw in ({"name": "reward", "model": str(tmp_path / "rm")},
                {"name": "reward", "model": str(folders["tiny-a"]), "kind": "judge"}):  # fmt: skip
        arbiter = build_arbiter(parse_arbiter(raw, ["a", "b"]))
        arbiter.prepare([])
        (scores,) = arbiter.score([(prompt, cands)], [])
        direct = []
        for c in cands:
            text = arbiter._text(prompt, c.text)
            if raw.get("kind") == "judge":
                judge = HFLM(arbiter.model, arbiter.tok)
                ctx = judge.encode(text)
                yes, no = (judge.loglikelihood_tokens([(ctx, judge.encode(w, add_special_tokens=False))])[0]
                           for w in (" Yes", " No"))  # fmt: skip
                direct.append(yes - no)
            else:
                with torch.no_grad():
                    direct.append(float(arbiter.model(**arbiter.tok(text, return_tensors="pt")).logits[0, 0]))
        assert [s["score"] for s in scores] == pytest.approx(direct, rel=1e-4, abs=1e-5)
        assert direct[0] != direct[1]
        row = decide(prompt, cands, scores, [Checker(Checks(language_id=False))(prompt, c.text) for c in cands],
                     "reward")  # fmt: skip
        assert row["arbitrage"]["winner"] == cands[max(range(2), key=direct.__getitem__)].model


# ---------------------------------------------------------------- the run


class _Counting:
    """A member that counts the prompts it is asked to answer."""

    def __init__(self, member: Member) -> None:
        self._m, self.asked = member, []

    def __getattr__(self, name):
        return getattr(self._m, name)

    def generate(self, prompts, gen):
        self.asked += [p.id for p in prompts]
        return self._m.generate(prompts, gen)


def test_resume_does_not_redo_prompts_and_the_sft_stage_reads_the_output(tmp_path, folders, members):
    out = tmp_path / "data.jsonl"
    first = settings_for(folders, ["de"])
    arb = parse_arbiter({"name": "likelihood"}, ["tiny-a", "tiny-b"])
    s1 = run_arbitrage(first, arb, out, pool=members, progress=False)
    assert s1["arbitrated_now"] == 2 and s1["rows"] + s1["rejected"] == 2
    done = {json.loads(x)["arbitrage"]["prompt_id"] for x in out.read_text().splitlines()}
    # A run killed mid-write leaves a partial line: it is cut off, and the finished prompts are kept.
    with out.open("a") as f:
        f.write('{"lang": "sw", "mess')
    counting = [_Counting(m) for m in members]
    s2 = run_arbitrage(settings_for(folders, ["de", "sw"]), arb, out, pool=counting, progress=False)
    asked = {i for c in counting for i in c.asked}
    assert s2["resumed_done"] == 2 and s2["arbitrated_now"] == 2
    assert asked and not asked & done
    assert set(s2["languages"]) == {"de", "sw"}
    summary = json.loads(sidecar(out, "summary.json").read_text())
    assert summary["languages"]["sw"]["n"] == 2
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == s2["rows"] >= 1
    for row in rows:
        rec = row["arbitrage"]
        assert rec["winner"] in {"tiny-a", "tiny-b"}
        assert all("loglik_per_byte" in c and "checks" in c for c in rec["candidates"])
    # The SFT stage's loader and renderer take the rows as they are; one optimizer step on them.
    examples = read_sources([out])
    assert len(examples) == len(rows) and all(e.messages[-1]["role"] == "assistant" for e in examples)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folders["tiny-a"])  # trainable (the pool's is frozen)
    tok = members[0].lm.tokenizer
    ensure_chat_template(tok)
    rendered = render_chat(tok, list(examples[0].messages), tools=list(examples[0].tools or []) or None)
    assert any(label != -100 for label in rendered["labels"])
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    batch = {k: torch.tensor([v]) for k, v in rendered.items()}
    loss = model(**batch).loss
    loss.backward()
    opt.step()
    assert math.isfinite(loss.item())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_cli_writes_rows_summary_and_table(tmp_path, folders):
    cfg = {"pool": [{"model": str(p), "name": n} for n, p in folders.items()],
           "prompts": {"chats": ["embedded:chat"], "languages": ["it"], "per_language": 1},
           "generation": {"max_new_tokens": 4}, "checks": {"lid_accuracy": "low"}}  # fmt: skip
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "o" / "data.jsonl"
    res = CliRunner().invoke(app, ["arbitrage", str(path), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "win share" in res.output and "tiny-a" in res.output
    summary = json.loads(sidecar(out, "summary.json").read_text())
    assert summary["languages"]["it"]["n"] == 1 and summary["arbiter"] == "likelihood"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"arbiter": {"name": "oracle"}}, "arbiter: name='oracle' is not one of likelihood, fixed, reward"),
        ({"arbiter": {"name": "fixed", "results": {"tiny-a": "/nope.json"}}}, "results file not found"),
        ({"pool": [{"model": "/no/such/folder"}]}, "model /no/such/folder: no such folder"),
        ({"generation": {"samples": 3}}, "generation: samples=3 with temperature=0"),
        ({"prompts": {"tools": ["embedded"], "languages": ["klingon"]}}, "klingon"),
        ({"checks": {"lid": True}}, "checks.lid: unknown key"),
    ],
)
def test_bad_config_is_one_line_error(tmp_path, folders, change, expected):
    cfg = {"pool": [{"model": str(p), "name": n} for n, p in folders.items()],
           "prompts": {"tools": ["embedded"]}} | change  # fmt: skip
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["arbitrage", str(path), "-o", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], res.output
    assert not (tmp_path / "x.jsonl").exists()


def test_pool_languages_tag_who_answers(members):
    tagged = [Member("a", members[0].lm, languages=["de"]), Member("b", members[1].lm, languages=["sw"])]
    arbiter = build_arbiter(parse_arbiter({"name": "likelihood"}, ["a", "b"]))
    by_lang = {p.lang: p for p in prompts_for(["de", "sw", "fr"], tools=False)}
    assert [m.label for m in arbiter.generators(by_lang["de"], tagged)] == ["a"]
    assert [m.label for m in arbiter.generators(by_lang["sw"], tagged)] == ["b"]
    assert [m.label for m in arbiter.generators(by_lang["fr"], tagged)] == ["a", "b"]  # nobody's: all answer


def test_the_shipped_config_validates_and_reads_the_training_split():
    from pathlib import Path

    from aetheris.arbitrage.config import load_settings

    settings, arbiter = load_settings(Path(__file__).resolve().parents[1] / "configs" / "arbitrage.yaml")
    assert [m.label for m in settings.pool] == ["gemma3-270m", "smollm2-135m"] and arbiter.name == "likelihood"
    prompts = load_prompts(settings.prompts)
    tools = [p for p in prompts if p.item is not None]
    assert len(tools) == 70 * 4 and {p.item.split for p in tools} == {"train"}
