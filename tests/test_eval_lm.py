"""The batched scorer: batching and padding must not change any number."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from eval_tiny import data_dir, tiny_llama, tiny_tokenizer, training_text
from greedy import decided, greedy_with_margins

from aetheris.eval.lm import HFLM, cut_at_stop


@pytest.fixture(scope="module")
def lm():
    tok = tiny_tokenizer(training_text(data_dir()))
    return HFLM(tiny_llama(tok), tok, batch_size=4)


REQUESTS = [
    ("Kifaa kilikuwa kimefungwa kwenye mfuko vibofu kwa sababu", " kikuwa nyepesi kuvunjika."),
    ("Mchwa walivamia nyumba ", "kwa hiyo mchwa walikula."),  # trailing space moves to the continuation
    ("x", "y"),
    ("Die Antwort lautet", " 42"),
    ("学生们", "所以他们很高兴。"),
]


def test_loglikelihood_matches_a_plain_forward_pass(lm):
    ctx, cont = lm.encode_pair(*REQUESTS[1])
    assert lm.tokenizer.decode(cont).startswith(" ")
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = F.log_softmax(lm.model(ids).logits[0].float(), -1)
    expected = sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))
    assert lm.loglikelihood([REQUESTS[1]])[0] == pytest.approx(expected, abs=1e-4)


def test_batched_loglikelihood_equals_one_at_a_time(lm):
    batched = lm.loglikelihood(REQUESTS)
    lm.batch_size = 1
    try:
        single = lm.loglikelihood(REQUESTS)
    finally:
        lm.batch_size = 4
    assert batched == pytest.approx(single, abs=1e-4)
    assert all(x < 0 for x in batched)


def _plain_loglikelihood(model, ctx: list[int], cont: list[int]) -> float:
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([ctx + cont])).logits[0].float(), -1)
    return sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))


class _FullLogitsOnly(torch.nn.Module):
    """A causal LM whose forward has no `logits_to_keep`: the scorer must slice full logits."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, input_ids, attention_mask=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_only_continuation_logits_are_computed_and_offsets_line_up(lm):
    """Contexts of very different lengths share a batch; the head runs on the tail only."""
    pairs = [lm.encode_pair(c, x) for c, x in REQUESTS]
    expected = [_plain_loglikelihood(lm.model, c, x) for c, x in pairs]
    seen = []
    hook = lm.model.lm_head.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    try:
        got = lm.loglikelihood_tokens(pairs)
    finally:
        hook.remove()
    assert got == pytest.approx(expected, abs=1e-4)
    widths = [len(c) + len(x) - 1 for c, x in pairs]
    assert max(seen) < max(widths)  # the longest context's head positions were skipped
    plain = HFLM(_FullLogitsOnly(lm.model), lm.tokenizer, batch_size=4, max_length=lm.max_length)
    assert plain.loglikelihood_tokens(pairs) == pytest.approx(expected, abs=1e-4)


def test_batched_generation_equals_one_at_a_time(lm):
    prompts = ["Swali: 2 + 2?\nAnswer:", "hello", "问题： 1+1?\nAnswer:"]
    batched = lm.generate(prompts, stop=["Swali:"], max_new_tokens=12)
    lm.batch_size = 1
    try:
        single = lm.generate(prompts, stop=["Swali:"], max_new_tokens=12)
    finally:
        lm.batch_size = 4
    # Padding a batch changes the matrix shapes; greedy text must agree wherever every step's
    # winner is beyond rounding (see greedy.py), and that must be most prompts.
    checked = 0
    for p, b, s in zip(prompts, batched, single):
        ids = torch.tensor([lm.encode(lm.format_prompt(p), add_special_tokens=not lm.chat_template)])
        if decided(greedy_with_margins(lm.model, ids, 12, pad_token_id=lm.pad_id)[1]):
            assert b == s, p
            checked += 1
    assert checked >= 2
    assert all(isinstance(t, str) for t in batched)


def test_rendered_prompts_are_neither_wrapped_again_nor_given_a_second_bos(lm):
    tok = copy.deepcopy(lm.tokenizer)
    tok.chat_template = "{% for m in messages %}<s>User: {{ m.content }}\n{% endfor %}Assistant:"
    # One prompt per batch: no padding, so every comparison below runs the same ops on the same
    # shapes and may be exact on any CPU.
    chat = HFLM(lm.model, tok, batch_size=1, chat_template=True)
    prompts = ["Swali: 2 + 2?", "hello"]
    text = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts]  # fmt: skip
    assert text[1] == "<s>User: hello\nAssistant:"
    wrapped = chat.generate(prompts, stop=[], max_new_tokens=10)
    assert chat.generate(text, stop=[], max_new_tokens=10, rendered=True) == wrapped
    # what `rendered` stands for, done by hand: the ids of the template's text, one <s>, as the model's input
    ids = [tok.encode(t, add_special_tokens=False) for t in text]
    assert all(i.count(tok.bos_token_id) == 1 for i in ids)
    out = [
        lm.model.generate(
            torch.tensor([i]), attention_mask=torch.ones(1, len(i), dtype=torch.long), do_sample=False,
            max_new_tokens=10, pad_token_id=lm.pad_id,
        )
        for i in ids
    ]  # fmt: skip
    assert wrapped == [tok.decode(o[0, len(i) :], skip_special_tokens=True) for o, i in zip(out, ids, strict=True)]
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, got 0"):
        chat.generate(prompts, stop=[], max_new_tokens=0)


def test_text_bits_are_the_nll_of_every_token(lm):
    text = "Habari ya asubuhi, rafiki yangu."
    toks = lm.encode(text, add_special_tokens=False)
    expected = -lm.loglikelihood_tokens([([lm.prefix_id], toks)])[0] / math.log(2)
    assert lm.text_nll_bits([text, ""]) == pytest.approx([expected, 0.0], rel=1e-5)


def test_long_text_is_scored_in_windows(lm):
    text = "Kwa mabadiliko kutoka mbio za robo hadi nusu maili, kasi huwa yenye umuhimu mdogo. " * 3
    n = len(lm.encode(text, add_special_tokens=False))
    short = HFLM(lm.model, lm.tokenizer, batch_size=4, max_length=16)
    bits = short.text_nll_bits([text])[0]
    assert n > 16 and bits > 0 and math.isfinite(bits)


def test_cut_at_stop():
    assert cut_at_stop("12\nSwali: next", ["Swali:", "</s>"]) == "12\n"
    assert cut_at_stop("no stop here", ["Swali:"]) == "no stop here"
