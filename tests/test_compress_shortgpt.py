"""ShortGPT: the lowest block-influence layers go, every other weight and per-layer setting stays."""

import pytest
import torch
from compress_models import FAST, MODELS, model, sample_ids, tokenizer

from aetheris.compress import apply_method
from aetheris.compress.calibration import calibration_batch
from aetheris.compress.prune import decoder_blocks
from aetheris.compress.registry import parse_settings
from aetheris.compress.shortgpt import block_influence_of, remove_blocks
from aetheris.distill.calibration import influence_scores


@pytest.mark.parametrize("kind", MODELS)
def test_removes_the_least_influential_blocks(kind):
    original = model(kind)
    before = {k: v.clone() for k, v in original.state_dict().items()}
    n = len(decoder_blocks(original))
    settings = parse_settings("shortgpt", {"fraction": 0.25} | FAST)
    ids, _ = calibration_batch(tokenizer(), settings)
    influence = block_influence_of(original, ids)
    assert influence == pytest.approx(influence_scores(original, ids), rel=1e-5)  # FAST rows fit one batch
    outcome, _ = apply_method(original, tokenizer(), "shortgpt", settings)
    drop = outcome.details["removed_layers"]
    k = max(1, round(0.25 * n))
    assert drop == sorted(sorted(range(n), key=influence.__getitem__)[:k])
    short = outcome.model
    keep = [i for i in range(n) if i not in drop]
    assert len(decoder_blocks(short)) == len(keep) == short.config.num_hidden_layers
    for new, old in enumerate(keep):
        for key, value in short.model.layers[new].state_dict().items():
            assert torch.equal(value, before[f"model.layers.{old}.{key}"]), key
    torch.testing.assert_close(short.get_input_embeddings().weight, before["model.embed_tokens.weight"])
    if kind == "aetheris":
        assert short.config.layout == "".join("SMAM"[i] for i in keep)
        assert len(short.config.attn_sliding) == short.config.layout.count("A")
    elif getattr(original.config, "layer_types", None) is not None:
        assert short.config.layer_types == [original.config.layer_types[i] for i in keep]
    with torch.no_grad():
        assert torch.isfinite(short(ids[:1]).logits).all()


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="exactly one of n_layers"):
        parse_settings("shortgpt", {"n_layers": 1, "fraction": 0.5})
    with pytest.raises(ValueError, match="remove 2 of 2 layers"):
        apply_method(model("llama"), tokenizer(), "shortgpt", {"n_layers": 2} | FAST)


def test_lists_of_token_ids_are_not_taken_for_per_layer_lists():
    m = model("llama")  # two layers and two eos ids: same length, not per layer
    m.config.eos_token_id = [2, 1]
    outcome, _ = apply_method(m, tokenizer(), "shortgpt", {"n_layers": 1} | FAST)
    assert outcome.model.config.num_hidden_layers == 1
    assert outcome.model.config.eos_token_id == [2, 1]


@pytest.mark.parametrize("kind", ["gemma3", "gpt_neox"])
def test_first_block_removed_the_cache_still_matches_a_full_forward(kind):
    """Removing block 0 renumbers every other: each attention must write its new cache slot."""
    short = remove_blocks(model(kind), [0])
    ids = sample_ids(1, 8)
    with torch.no_grad():
        cached = short.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
        full = short.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, full)
