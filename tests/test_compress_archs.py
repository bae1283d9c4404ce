"""Every method on every supported teacher family (and the student): its key invariant, and a saved
folder that loads with AutoModelForCausalLM and gives the in-memory compressed model's logits."""

import pytest
import torch
from compress_models import block_linears, model, tokenizer
from tiny_teachers import TEACHER_TYPES

from aetheris.compress import apply_method, load_compressed, parse_settings, write_compressed
from aetheris.compress.prune import block_list, decoder_blocks

KINDS = [*TEACHER_TYPES, "aetheris"]
TINY = {"calibration_rows": 2, "calibration_seq_len": 16}  # 112 cases: the code paths, not the quality
SETTINGS = {
    "int8": {},
    "int4": {"group_size": 32},
    "magnitude": {"sparsity": 0.3},
    "wanda": {"sparsity": 0.25} | TINY,
    "sparsegpt": {"structure": "2:4"} | TINY,
    "shortgpt": {"n_layers": 1} | TINY,
    "vocab-trim": {"calibration_langs": "en", "report_sentences": 0},
}


def _check_quantised(before, outcome, settings):
    group = settings.get("group_size", 1)
    linears = block_linears(outcome.model)
    fits = [n for n, lin in linears.items() if lin.in_features % group == 0]
    assert fits and outcome.details["quantised_layers"] == len(fits)
    for name in fits:
        w = linears[name].weight
        assert type(w) is not torch.nn.Parameter, name  # a torchao tensor
        step = w.scale.reshape(w.shape[0], -1).repeat_interleave(group if group > 1 else w.shape[1], dim=1)
        assert ((w.dequantize() - before[name]).abs() <= 0.5 * step * (1 + 1e-4) + 1e-8).all(), name


def _check_sparsity(before, outcome, method):
    for name, lin in block_linears(outcome.model).items():
        w = lin.weight.detach()
        if method == "magnitude":
            assert int((w == 0).sum()) == round(0.3 * w.numel()), name
        elif method == "wanda":
            assert ((w == 0).sum(1) == round(0.25 * w.shape[1])).all(), name
        else:  # sparsegpt 2:4, the kept weights updated (OBS), not just masked
            assert (w != 0).reshape(w.shape[0], -1, 4).sum(-1).max() <= 2, name
            assert (w == 0).float().mean() == pytest.approx(0.5, abs=1e-6), name
            assert (w[w != 0] != before[name][w != 0]).float().mean() > 0.5, name


def _check_shorter(original_state, original_config, prefix, outcome):
    short, drop = outcome.model, outcome.details["removed_layers"]
    n = original_config.num_hidden_layers
    keep = [i for i in range(n) if i not in drop]
    blocks = decoder_blocks(short)
    assert len(drop) == 1 and len(blocks) == short.config.num_hidden_layers == n - 1
    for new, old in enumerate(keep):
        for key, value in blocks[new].state_dict().items():
            assert torch.equal(value, original_state[f"{prefix}.{old}.{key}"]), key
        for module in blocks[new].modules():  # the cache slot each attention writes
            if hasattr(module, "layer_idx"):
                assert module.layer_idx == new, type(module).__name__
    if getattr(original_config, "layer_types", None) is not None:
        assert short.config.layer_types == [original_config.layer_types[i] for i in keep]


def _check_trimmed(original_embed, original_bias, outcome):
    new_tok, new = outcome.tokenizer, outcome.model
    emb, head = new.get_input_embeddings().weight, new.get_output_embeddings()
    rows = len(new_tok)
    assert rows == new.config.vocab_size == emb.shape[0] == head.weight.shape[0] < len(tokenizer())
    old_vocab = tokenizer().get_vocab()
    for token, i in list(new_tok.get_vocab().items())[:50]:  # kept rows are the same token's old rows
        assert torch.equal(emb[i], original_embed[old_vocab[token]]), token
        if head.bias is not None:  # phi's head bias follows its rows
            assert torch.equal(head.bias[i], original_bias[old_vocab[token]]), token


@pytest.mark.parametrize("method", list(SETTINGS))
@pytest.mark.parametrize("kind", KINDS)
def test_method_on_every_family_and_round_trip(kind, method, tmp_path):
    m = model(kind)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    config, prefix = m.config, block_list(m)[0]
    before = {n: lin.weight.detach().clone() for n, lin in block_linears(m).items()}
    embed = m.get_input_embeddings().weight.detach().clone()
    bias = m.get_output_embeddings().bias
    bias = None if bias is None else bias.detach().clone()
    settings = parse_settings(method, SETTINGS[method])
    outcome, seconds = apply_method(m, tokenizer(), method, settings)
    if method in ("int8", "int4"):
        _check_quantised(before, outcome, SETTINGS[method])
    elif method == "shortgpt":
        _check_shorter(state, config, prefix, outcome)
    elif method == "vocab-trim":
        _check_trimmed(embed, bias, outcome)
    else:
        _check_sparsity(before, outcome, method)
    write_compressed(outcome, tmp_path / "out", kind, method, settings, seconds)
    loaded, loaded_tok = load_compressed(tmp_path / "out")
    ids = loaded_tok(["Habari ya asubuhi, rafiki.", "The weather is nice."], return_tensors="pt",
                     padding=True).input_ids  # fmt: skip
    with torch.no_grad():
        expected = outcome.model(input_ids=ids).logits
        got = loaded(input_ids=ids).logits
    assert type(loaded) is type(outcome.model)
    torch.testing.assert_close(got, expected)
