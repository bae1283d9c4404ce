"""Pruning invariants: N:M groups, SparseGPT's updates and the reconstruction order (exact per-layer and
per-row sparsity of every method on every family: test_compress_archs)."""

import pytest
import torch
from compress_models import FAST, MODELS, block_linears, model, tokenizer

from aetheris.compress import apply_method
from aetheris.compress.masks import prune_mask
from aetheris.compress.prune import LinearStats
from aetheris.compress.sparsegpt import sparsegpt_blocked, sparsegpt_reference
from aetheris.compress.wanda import wanda_score


def _weights(m):
    return {n: lin.weight.detach().clone() for n, lin in block_linears(m).items()}


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_two_four_keeps_at_most_two_of_every_four(kind, method):
    m = model(kind)
    before = _weights(m)
    settings = {"structure": "2:4"} | (FAST if method != "magnitude" else {})
    apply_method(m, tokenizer(), method, settings)
    for name, w in _weights(m).items():
        nonzero = (w != 0).reshape(w.shape[0], -1, 4).sum(-1)
        assert nonzero.max() <= 2, name
        assert (w == 0).float().mean() == pytest.approx(0.5, abs=1e-6), name  # random weights: no extra zeros
        if method == "sparsegpt":  # OBS: the kept weights move to compensate, not just a mask
            kept = w != 0
            assert (w[kept] != before[name][kept]).float().mean() > 0.5, name
        else:
            assert torch.equal(w[w != 0], before[name][w != 0]), name


def test_sparsegpt_unstructured_updates_kept_weights_and_hits_the_sparsity():
    m = model("qwen3")
    before = _weights(m)
    record_outcome, _ = apply_method(m, tokenizer(), "sparsegpt", {"sparsity": 0.5} | FAST)
    assert record_outcome.calibration["count"] == FAST["calibration_rows"]
    for name, w in _weights(m).items():
        assert int((w == 0).sum()) == round(0.5 * w.numel()), name  # one 128-column block here
        kept = w != 0
        assert (w[kept] != before[name][kept]).float().mean() > 0.5, name


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpt_blocked_equals_column_by_column_reference(nm):
    torch.manual_seed(0)
    w = torch.randn(24, 64, dtype=torch.float64)
    x = torch.randn(500, 64, dtype=torch.float64) @ torch.randn(64, 64, dtype=torch.float64)
    h = x.T @ x / x.shape[0]
    fast = sparsegpt_blocked(w, h, 0.5, nm, block_size=16)
    slow = sparsegpt_reference(w, h, 0.5, nm, block_size=16)
    assert torch.equal(fast == 0, slow == 0)
    torch.testing.assert_close(fast, slow)


def test_reconstruction_error_orders_sparsegpt_wanda_magnitude():
    """One layer, correlated inputs with uneven column scales, 50%: the order DistAYA relies on."""
    torch.manual_seed(0)
    cols, rows, n = 128, 64, 2048
    mix = torch.randn(cols, cols) / cols**0.5 + torch.eye(cols)
    x = (torch.randn(n, cols) @ mix) * torch.logspace(-1, 1, cols)[torch.randperm(cols)]
    w = torch.randn(rows, cols)
    stats = LinearStats(torch.zeros(cols), torch.zeros(cols, cols))
    stats.add(x)
    errors = {}
    for name, score in [("magnitude", w.abs()), ("wanda", wanda_score(w, stats))]:
        pruned = w.masked_fill(prune_mask(score, 0.5, None, per_row=name == "wanda"), 0)
        errors[name] = float(torch.linalg.norm((w - pruned) @ x.T))
    errors["sparsegpt"] = float(torch.linalg.norm((w - sparsegpt_blocked(w, stats.hessian, 0.5, None)) @ x.T))
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors
