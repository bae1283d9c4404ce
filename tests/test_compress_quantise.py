"""int8 / int4 through torchao: error within the quantiser's bound, and folders that load back exactly."""

import pytest
import torch
from compress_models import FAST, MODELS, model, tokenizer

from aetheris.compress import apply_method, load_compressed, parse_settings, write_compressed
from aetheris.compress.prune import decoder_blocks, prunable_linears

QMAX = {8: 127, 4: 7}  # symmetric grids: the largest |w| of a row/group maps to about ±QMAX


def _dense(kind):
    m = model(kind)
    return m, {
        n: lin.weight.detach().clone() for n, lin in m.named_modules() if isinstance(lin, torch.nn.Linear)
    }


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize(("method", "settings"), [("int8", {}), ("int4", {"group_size": 32})])
def test_error_within_half_a_step(kind, method, settings):
    m, dense = _dense(kind)
    outcome, _ = apply_method(m, tokenizer(), method, settings)
    bits = outcome.details["weight_bits"]
    group = settings.get("group_size")
    quantised = 0
    for name, lin in outcome.model.named_modules():
        if not isinstance(lin, torch.nn.Linear) or type(lin.weight) is torch.nn.Parameter:
            continue
        w = dense[name]
        g = group or w.shape[1]
        step = lin.weight.scale.reshape(w.shape[0], -1).repeat_interleave(g, dim=1)
        err = (lin.weight.dequantize() - w).abs()
        assert (err <= 0.5 * step * (1 + 1e-4) + 1e-8).all(), name
        # the step is the grid of the group's range: no coarser than max|w| / QMAX
        amax = w.abs().reshape(w.shape[0], -1, g).amax(-1).repeat_interleave(g, dim=1)
        assert (step <= amax / QMAX[bits] * (1 + 1e-4)).all(), name
        quantised += 1
    blocks = decoder_blocks(outcome.model)
    assert quantised == sum(len(prunable_linears(b)) for b in blocks) == outcome.details["quantised_layers"]


def test_int4_group_128_keeps_layers_it_cannot_group():
    m, _ = _dense("llama")  # hidden 64: only down_proj (128 inputs) has whole groups of 128
    outcome, _ = apply_method(m, tokenizer(), "int4", {"group_size": 128})
    kept = set(outcome.details["kept_linear_layers"])
    for name, lin in outcome.model.named_modules():
        if isinstance(lin, torch.nn.Linear):
            assert (name in kept) == (name == "lm_head" or lin.in_features % 128 != 0), name


@pytest.mark.parametrize(
    ("kind", "method", "settings"),
    [(k, "int8", {}) for k in MODELS]
    + [(k, "int4", {"group_size": 32}) for k in ("gemma3", "aetheris")]
    + [("cohere2", m, FAST) for m in ("wanda", "sparsegpt")]
    + [("gemma3", "magnitude", {"structure": "2:4"})]
    + [("aetheris", "shortgpt", {"n_layers": 1} | FAST), ("qwen3", "vocab-trim", {"report_sentences": 2})],
)
def test_round_trip_gives_the_in_memory_outputs(tmp_path, kind, method, settings):
    outcome, seconds = apply_method(model(kind), tokenizer(), method, settings)
    write_compressed(outcome, tmp_path / "out", kind, method, parse_settings(method, settings), seconds)
    assert not list((tmp_path / "out").glob("*.bin")) and not list((tmp_path / "out").glob("*.pt"))
    loaded, tok = load_compressed(tmp_path / "out")
    ids = tok(["Habari ya asubuhi, rafiki yangu."], return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, outcome.model(ids).logits)
    assert type(loaded.model.layers[0]) is type(outcome.model.model.layers[0])
    if method.startswith("int"):
        assert any(type(p) is not torch.nn.Parameter for p in loaded.parameters())
