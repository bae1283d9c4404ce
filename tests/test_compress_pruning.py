"""Pruning invariants: N:M groups, SparseGPT's updates and the reconstruction order (exact per-layer and
per-row sparsity of every method on every family: test_compress_archs)."""

import pytest
import torch
from compress_models import FAST, MODELS, block_linears, model, sample_ids, student, tokenizer
from tiny_teachers import tiny_model

from aetheris.compress import apply_method
from aetheris.compress.calibration import calibration_batch
from aetheris.compress.masks import prune_mask
from aetheris.compress.prune import (
    CAPTURE_BATCH,
    CalibratedSparsitySettings,
    LinearStats,
    Link,
    block_call,
    block_stats,
    capture_block_calls,
    decoder_blocks,
    prune_model,
    reference_block_stats,
    replay_block,
)
from aetheris.compress.sparsegpt import (
    SparseGPTSettings,
    sparsegpt_blocked,
    sparsegpt_prune,
    sparsegpt_reference,
)
from aetheris.compress.wanda import wanda_prune, wanda_score


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


# The sequential calibration (one capture forward, then each block on its current inputs) against the
# reference (a forward from the embeddings per block). 12 rows: a full batch of CAPTURE_BATCH and a part.
ROWS = {"calibration_rows": 12, "calibration_seq_len": 16}
METHODS = {"wanda": (wanda_prune, CalibratedSparsitySettings, "norms"),
           "sparsegpt": (sparsegpt_prune, SparseGPTSettings, "hessian")}  # fmt: skip


def _sequential_model(kind):
    if kind == "aetheris-parallel":  # M blocks read their S/A partner's input: a hidden-valued kwarg
        m = student()
        m.config.parallel_residual = True
        return m
    return model(kind)


def _assert_stats_close(fast, slow, where):
    assert fast.keys() == slow.keys(), where
    for name in fast:
        assert fast[name].tokens == slow[name].tokens, (where, name)
        torch.testing.assert_close(fast[name].sq_norm, slow[name].sq_norm, rtol=1e-4, atol=1e-5, msg=name)
        if slow[name].hessian is not None:
            torch.testing.assert_close(fast[name].hessian, slow[name].hessian, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("kind", ["llama", "gemma3", "aetheris", "aetheris-parallel"])
@pytest.mark.parametrize("method", list(METHODS))
@torch.no_grad()
def test_sequential_calibration_equals_the_reference(kind, method):
    """Block by block, both paths prune their own copy; the statistics of every block (which see the
    earlier pruned blocks) agree, and so do the pruned weights."""
    prune_fn, settings_cls, needs = METHODS[method]
    settings = settings_cls(**ROWS)
    ids, _ = calibration_batch(tokenizer(), settings)
    fast_model, slow_model = _sequential_model(kind), _sequential_model(kind)
    hessian = needs == "hessian"
    pairs = zip(
        block_stats(fast_model, ids, hessian), reference_block_stats(slow_model, ids, hessian), strict=True
    )
    for i, ((_, fast_lin, fast), (_, slow_lin, slow)) in enumerate(pairs):
        _assert_stats_close(fast, slow, i)
        for name in fast_lin:
            for lin, s in [(fast_lin[name], fast[name]), (slow_lin[name], slow[name])]:
                lin.weight.copy_(prune_fn(lin.weight.float(), s if s.tokens else None, settings))
    fast_w, slow_w = _weights(fast_model), _weights(slow_model)
    for name in slow_w:
        assert torch.equal(fast_w[name] == 0, slow_w[name] == 0), name
        torch.testing.assert_close(fast_w[name], slow_w[name], rtol=1e-4, atol=1e-5, msg=name)


def test_parallel_pairs_link_the_partner_input():
    """The M block of a parallel pair reads the S/A block's input: captured as a link to that block."""
    m = _sequential_model("aetheris-parallel")
    calls, _ = capture_block_calls(m, sample_ids())
    assert [c.kwargs["branch_input"] for c in calls[3]] == [Link(2)]
    assert calls[1][0].kwargs["branch_input"] == Link(0)
    assert calls[2][0].kwargs["branch_input"] is None


@pytest.mark.parametrize("method", list(METHODS))
def test_prune_model_sequential_equals_reference_end_to_end(method):
    prune_fn, settings_cls, needs = METHODS[method]
    settings = settings_cls(**ROWS)
    fast, slow = model("gemma3"), model("gemma3")
    prune_model(fast, tokenizer(), settings, prune_fn, needs)
    prune_model(slow, tokenizer(), settings, prune_fn, needs, reference=True)
    ids = sample_ids()
    torch.testing.assert_close(fast(ids).logits, slow(ids).logits, rtol=1e-4, atol=1e-5)


def _block_calls(m, gather, ids):
    counts = []
    hooks = [b.register_forward_hook(lambda *a: counts.append(1)) for b in decoder_blocks(m)]
    try:
        for _ in gather(m, ids, False):
            pass
    finally:
        for h in hooks:
            h.remove()
    return len(counts)


def test_sequential_calibration_costs_linear_block_forwards():
    n_layers, batches = 6, 2
    m = tiny_model("llama", vocab_size=len(tokenizer()), num_hidden_layers=n_layers)
    ids, _ = calibration_batch(tokenizer(), CalibratedSparsitySettings(**ROWS))
    assert ids.shape[0] == CAPTURE_BATCH + 4  # two batches, one partial
    # capture: blocks 0..L-2; then per block a stats pass and (but the last) an output pass
    assert _block_calls(m, block_stats, ids) == batches * (3 * n_layers - 2)
    assert _block_calls(m, reference_block_stats, ids) == batches * n_layers * (n_layers + 1) // 2


class _KwargBlock(torch.nn.Module):
    """A block called with `hidden_states=` and a cache it must not keep."""

    def forward(self, hidden_states, scale=None, cache=None):
        assert cache is None
        return hidden_states * scale, "aux"


def test_block_call_takes_the_hidden_state_as_kwarg_drops_caches_and_links():
    from transformers import DynamicCache

    x, partner = torch.randn(2, 3), torch.randn(2, 3)
    held = {id(partner): (0, partner)}
    call = block_call((), {"hidden_states": x, "scale": partner, "cache": DynamicCache()}, held)
    assert not call.positional and call.args == () and call.kwargs == {"scale": Link(0), "cache": None}
    y = torch.randn(2, 3)
    torch.testing.assert_close(replay_block(_KwargBlock(), call, x, {0: y}), x * y)
