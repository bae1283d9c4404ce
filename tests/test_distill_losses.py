"""KD losses: chunking is exact, KL properties hold, the top-k tail bucket is right, padding is ignored."""

import math

import pytest
import torch
import torch.nn.functional as F

from aetheris.distill.losses import (
    KDObjective,
    TeacherHidden,
    TeacherLogits,
    TeacherTopK,
    counted_positions,
    logit_transform,
)

V, H = 23, 8


def kd(hs, head, teacher, *, labels=None, attention_mask=None, student_logit_fn=None, row_weights=None, **objective):
    """One objective call: the loss's weights and chunking, then the batch."""
    return KDObjective(**objective)(hs, head, teacher, labels=labels, attention_mask=attention_mask,
                                    student_logit_fn=student_logit_fn, row_weights=row_weights)  # fmt: skip


def _setup(seed=0, batch=2, length=7):
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(batch, length, H, generator=g, requires_grad=True)
    head = torch.randn(V, H, generator=g, requires_grad=True)
    t_logits = torch.randn(batch, length, V, generator=g) * 2
    labels = torch.randint(0, V, (batch, length), generator=g)
    return hs, head, t_logits, labels


def _reference(hs, head, t_logits, labels, mask, temperature, alpha, fn=None):
    """The plain formula over full logits, shifted by hand."""
    s = hs @ head.t()
    if fn is not None:
        s = fn(s)
    s, t, y = s[:, :-1], t_logits[:, :-1], labels[:, 1:]
    keep = (y != -100) & mask[:, :-1].bool() & mask[:, 1:].bool()
    s, t, y = s[keep], t[keep], y[keep]
    kl = (F.softmax(t / temperature, -1) * (F.log_softmax(t / temperature, -1) - F.log_softmax(s / temperature, -1))).sum(-1).mean()
    ce = F.cross_entropy(s, y)
    return temperature**2 * kl + alpha * ce, kl, ce


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("chunk", [1, 3, 5, 1000])
def test_chunked_equals_unchunked_values_and_grads(chunk, fused):
    hs, head, t_logits, labels = _setup()
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    labels[0, 2] = -100
    fn = logit_transform(logit_scale=0.7, softcap=5.0)
    out = kd(hs, head, TeacherLogits(t_logits), labels=labels, attention_mask=mask,
                  temperature=2.0, alpha=0.3, chunk_size=chunk, student_logit_fn=fn, fused=fused)
    g_out = torch.autograd.grad(out.loss, (hs, head))
    ref, kl, ce = _reference(hs, head, t_logits, labels, mask, 2.0, 0.3, fn)
    g_ref = torch.autograd.grad(ref, (hs, head))
    assert torch.allclose(out.loss, ref, atol=1e-6) and torch.allclose(out.kl, kl, atol=1e-6)
    assert torch.allclose(out.ce, ce, atol=1e-6)
    for a, b in zip(g_out, g_ref):
        assert torch.allclose(a, b, atol=1e-6)


def test_teacher_hidden_form_equals_logits_form():
    hs, head, _, labels = _setup()
    g = torch.Generator().manual_seed(5)
    t_hidden, t_head = torch.randn(2, 7, 12, generator=g), torch.randn(V, 12, generator=g)
    t_fn = logit_transform(softcap=3.0)
    a = kd(hs, head, TeacherHidden(t_hidden, t_head, t_fn), chunk_size=4)
    b = kd(hs, head, TeacherLogits(t_fn(t_hidden @ t_head.t())))
    assert torch.allclose(a.loss, b.loss, atol=1e-6)


def test_kl_zero_when_student_is_teacher():
    hs, head, _, labels = _setup()
    t_logits = (hs @ head.t()).detach()
    out = kd(hs, head, TeacherLogits(t_logits), temperature=3.0, chunk_size=4)
    assert abs(out.loss.item()) < 1e-6


def test_topk_with_k_equal_vocab_is_full_kl():
    hs, head, t_logits, labels = _setup()
    t_lp = F.log_softmax(t_logits / 2.0, -1)
    vals, ids = t_lp.topk(V, -1)
    full = kd(hs, head, TeacherLogits(t_logits), temperature=2.0)
    topk = kd(hs, head, TeacherTopK(vals, ids), temperature=2.0, chunk_size=3)
    assert torch.allclose(full.loss, topk.loss, atol=1e-5)
    g1, g2 = torch.autograd.grad(full.loss, head), torch.autograd.grad(topk.loss, head)
    assert torch.allclose(g1[0], g2[0], atol=1e-5) and torch.isfinite(g2[0]).all()


def test_topk_tail_bucket_by_hand():
    # One position, vocabulary 4, k = 2. Teacher p = (.5, .3, .1, .1), student q = (.25, .25, .25, .25).
    p = torch.tensor([0.5, 0.3, 0.1, 0.1])
    hs = torch.zeros(1, 2, 1)
    head = torch.zeros(4, 1, requires_grad=True)  # student logits all 0 -> uniform
    vals, ids = p.log()[:2].view(1, 1, 2).expand(1, 2, 2), torch.tensor([0, 1]).view(1, 1, 2).expand(1, 2, 2)
    out = kd(hs, head, TeacherTopK(vals, ids))
    # buckets: {0}: .5 vs .25, {1}: .3 vs .25, tail: .2 vs .5
    expected = 0.5 * math.log(0.5 / 0.25) + 0.3 * math.log(0.3 / 0.25) + 0.2 * math.log(0.2 / 0.5)
    assert out.n_tokens == 1 and out.kl.item() == pytest.approx(expected, abs=1e-6)


def test_full_kl_numeric_by_hand():
    # Two-token vocabulary: teacher logits (ln 3, 0) -> p = (.75, .25); student logits 0 -> q = (.5, .5).
    hs = torch.tensor([[[1.0], [0.0]]])
    head = torch.tensor([[0.0], [0.0]], requires_grad=True)
    t = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[0, 0]])
    out = kd(hs, head, TeacherLogits(t), labels=labels, alpha=0.5)
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert out.kl.item() == pytest.approx(kl, abs=1e-6)
    assert out.ce.item() == pytest.approx(math.log(2), abs=1e-6)
    assert out.loss.item() == pytest.approx(kl + 0.5 * math.log(2), abs=1e-6)


def test_temperature_squared_scaling():
    hs, head, t_logits, _ = _setup()
    for temperature in (1.0, 2.0, 4.0):
        out = kd(hs, head, TeacherLogits(t_logits), temperature=temperature)
        _, kl, _ = _reference(hs, head, t_logits, torch.zeros(2, 7, dtype=torch.long), torch.ones(2, 7), temperature, 0)
        assert out.loss.item() == pytest.approx(temperature**2 * kl.item(), rel=1e-5)
        assert out.kl.item() == pytest.approx(kl.item(), rel=1e-5)


def test_padding_positions_are_ignored():
    hs, head, t_logits, labels = _setup()
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, 4:] = 0
    base = kd(hs, head, TeacherLogits(t_logits), labels=labels, attention_mask=mask, alpha=1.0)
    hs2, t2, labels2 = hs.detach().clone(), t_logits.clone(), labels.clone()
    hs2[0, 4:] = 1e3  # garbage in padded positions must not change anything
    t2[0, 4:] = -1e3
    labels2[0, 4:] = 3
    other = kd(hs2, head, TeacherLogits(t2), labels=labels2, attention_mask=mask, alpha=1.0)
    assert torch.allclose(base.loss, other.loss) and base.n_tokens == other.n_tokens == 3 + 6


def test_counted_positions_rules():
    labels = torch.tensor([[5, 6, -100, 7]])
    idx, targets = counted_positions((1, 4), labels, torch.tensor([[1, 1, 1, 1]]), "cpu")
    assert idx.tolist() == [0, 2] and targets.tolist() == [6, 7]


def test_bad_teacher_signals_are_refused():
    hs, head, t_logits, _ = _setup()
    with pytest.raises(ValueError, match="hidden width 5 != head width 4"):
        TeacherHidden(torch.zeros(2, 7, 5), torch.zeros(V, 4))
    vals, ids = t_logits.topk(3, -1)
    with pytest.raises(ValueError, match="TeacherTopK: logprobs"):
        TeacherTopK(vals, ids[..., :2])
    with pytest.raises(ValueError, match="alpha > 0 needs labels"):
        kd(hs, head, TeacherLogits(t_logits), alpha=1.0)


@pytest.mark.parametrize("fused", [True, False])
def test_logits_exist_one_chunk_at_a_time_forward_and_backward(fused):
    hs, head, t_logits, labels = _setup(batch=3, length=9)
    seen = []

    def spy(logits):
        seen.append(logits.shape[0])
        return logits

    out = kd(hs, head, TeacherLogits(t_logits), chunk_size=4, student_logit_fn=spy, fused=fused)
    n_forward = len(seen)
    out.loss.backward()
    assert out.n_tokens == 3 * 8 and n_forward == 6  # ceil(24 / 4) chunks
    # fused: the gradients were taken in the forward, so the backward makes no logits at all;
    # checkpointed: the backward recomputes each chunk instead of keeping its logits.
    assert len(seen) == (1 if fused else 2) * n_forward
    assert max(seen) == 4


def _teachers(t_logits, t_hidden, t_head, vals, ids):
    return {
        "logits": TeacherLogits(t_logits),
        "hidden": TeacherHidden(t_hidden, t_head, logit_transform(softcap=4.0)),
        "topk": TeacherTopK(vals, ids),
    }


@pytest.mark.parametrize("form", ["logits", "hidden", "topk"])
def test_fused_equals_checkpointed_for_every_teacher_form(form):
    hs, head, t_logits, labels = _setup(seed=3, batch=3, length=6)
    g = torch.Generator().manual_seed(9)
    t_hidden, t_head = torch.randn(3, 6, 5, generator=g), torch.randn(V, 5, generator=g)
    vals, ids = F.log_softmax(t_logits / 1.5, -1).topk(6, -1)
    teacher = _teachers(t_logits, t_hidden, t_head, vals, ids)[form]
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[2, 3:] = 0
    results = []
    for fused in (True, False):
        out = kd(hs, head, teacher, labels=labels, attention_mask=mask, temperature=1.5, alpha=0.4,
                 kl_weight=0.25, chunk_size=4, fused=fused)  # fmt: skip
        # an upstream gradient other than 1: the fused backward must scale what it stored
        grads = torch.autograd.grad(3.0 * out.loss + hs.sum(), (hs, head))
        results.append((out, grads))
    (a, ga), (b, gb) = results
    assert torch.allclose(a.loss, b.loss, atol=1e-6) and torch.allclose(a.kl, b.kl) and torch.allclose(a.ce, b.ce)
    assert torch.allclose(a.loss, 0.25 * 1.5**2 * a.kl + 0.4 * a.ce, atol=1e-6)
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, atol=1e-5)


def test_fused_with_a_frozen_head_or_frozen_hidden():
    hs, head, t_logits, labels = _setup()
    ref = torch.autograd.grad(kd(hs, head, TeacherLogits(t_logits), fused=False).loss, (hs, head))
    only_h = torch.autograd.grad(kd(hs, head.detach(), TeacherLogits(t_logits)).loss, hs)[0]
    only_head = torch.autograd.grad(kd(hs.detach(), head, TeacherLogits(t_logits)).loss, head)[0]
    assert torch.allclose(only_h, ref[0], atol=1e-6) and torch.allclose(only_head, ref[1], atol=1e-6)


def test_fused_bf16_head_matches_fp32_gradients():
    hs, head, t_logits, labels = _setup(seed=4)
    ref = torch.autograd.grad(kd(hs, head, TeacherLogits(t_logits), labels=labels, alpha=0.5).loss, head)[0]
    head16 = head.detach().to(torch.bfloat16).requires_grad_()
    out = kd(hs.detach().to(torch.bfloat16), head16, TeacherLogits(t_logits), labels=labels, alpha=0.5)
    (g,) = torch.autograd.grad(out.loss, head16)
    assert g.dtype == torch.bfloat16 and torch.allclose(g.float(), ref, rtol=0.05, atol=0.02)


def test_all_padding_gives_zero_loss_that_backpropagates():
    hs, head, t_logits, labels = _setup()
    out = kd(hs, head, TeacherLogits(t_logits), labels=torch.full_like(labels, -100), alpha=1.0)
    out.loss.backward()
    assert out.n_tokens == 0 and out.loss.item() == 0 and torch.count_nonzero(head.grad) == 0


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("form", ["logits", "hidden", "topk"])
def test_per_row_sums_are_each_rows_own_loss(form, fused):
    """row_kl / row_ce / row_tokens of a batch equal the totals of each row run alone: what
    per-group weighting (equity-aware KD) reads, without full-vocabulary logits."""
    hs, head, t_logits, labels = _setup(seed=6, batch=3, length=6)
    g = torch.Generator().manual_seed(2)
    t_hidden, t_head = torch.randn(3, 6, 5, generator=g), torch.randn(V, 5, generator=g)
    vals, ids = F.log_softmax(t_logits / 1.5, -1).topk(6, -1)
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[1, 2:] = 0
    batch = kd(hs, head, _teachers(t_logits, t_hidden, t_head, vals, ids)[form], labels=labels,
               attention_mask=mask, temperature=1.5, alpha=0.4, chunk_size=4, fused=fused)  # fmt: skip
    assert batch.row_tokens.tolist() == [5, 1, 5] and batch.n_tokens == 11
    for r in range(3):
        one = kd(hs[r : r + 1], head, _teachers(t_logits[r : r + 1], t_hidden[r : r + 1], t_head, vals[r : r + 1],
                 ids[r : r + 1])[form], labels=labels[r : r + 1], attention_mask=mask[r : r + 1], temperature=1.5,
                 alpha=0.4, chunk_size=4, fused=fused)  # fmt: skip
        assert batch.row_kl[r].item() == pytest.approx(one.kl.item() * one.n_tokens, abs=1e-5)
        assert batch.row_ce[r].item() == pytest.approx(one.ce.item() * one.n_tokens, abs=1e-5)
    assert torch.allclose(batch.row_kl.sum() / 11, batch.kl, atol=1e-6)


@pytest.mark.parametrize("fused", [True, False])
def test_row_weights_scale_each_rows_share_of_loss_and_gradient(fused):
    hs, head, t_logits, labels = _setup(seed=8, batch=2, length=7)
    w = torch.tensor([2.5, 0.0])
    out = kd(hs, head, TeacherLogits(t_logits), labels=labels, temperature=2.0, alpha=0.3, chunk_size=3,
             fused=fused, row_weights=w)  # fmt: skip
    g_h, g_head = torch.autograd.grad(out.loss, (hs, head))
    # The reference: row 0 alone, scaled by 2.5 and by its share of the batch's counted positions.
    ref, _, _ = _reference(hs[:1], head, t_logits[:1], labels[:1], torch.ones(1, 7), 2.0, 0.3)
    ref = 2.5 * ref * 6 / 12
    r_h, r_head = torch.autograd.grad(ref, (hs, head))
    assert torch.allclose(out.loss, ref, atol=1e-6)
    assert torch.allclose(g_h, r_h, atol=1e-6) and torch.allclose(g_head, r_head, atol=1e-6)
    assert torch.count_nonzero(g_h[1]) == 0  # a row of weight 0 gets no gradient
    # metrics stay unweighted: the mean KL over both rows
    plain = kd(hs, head, TeacherLogits(t_logits), labels=labels, temperature=2.0, alpha=0.3, chunk_size=3, fused=fused)
    assert torch.allclose(out.kl, plain.kl) and torch.allclose(out.row_kl, plain.row_kl)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("form", ["logits", "hidden", "topk"])
def test_teacher_ce_per_row_is_the_teachers_own_loss_at_the_labels(form, fused):
    """teacher_ce=True sums the teacher's CE at T = 1 at each row's labels, whatever form the teacher
    comes in (top-k needs the label log-probs); it is a metric and leaves the loss as it was."""
    hs, head, t_logits, labels = _setup(seed=11, batch=3, length=6)
    g = torch.Generator().manual_seed(4)
    t_hidden, t_head = torch.randn(3, 6, 5, generator=g), torch.randn(V, 5, generator=g)
    softcap = logit_transform(softcap=4.0)
    if form == "hidden":  # the teacher's logits are then its hidden states through its head
        t_logits = softcap(t_hidden @ t_head.t())
    full = F.log_softmax(t_logits, -1)
    nxt = torch.zeros_like(labels)
    nxt[:, :-1] = labels[:, 1:]
    label_lp = full.gather(-1, nxt[..., None])[..., 0]  # what a cache built with label_logprobs holds
    vals, ids = F.log_softmax(t_logits / 1.5, -1).topk(4, -1)
    teacher = {"logits": TeacherLogits(t_logits), "hidden": TeacherHidden(t_hidden, t_head, softcap),
               "topk": TeacherTopK(vals, ids, label_lp)}[form]  # fmt: skip
    labels[0, 3] = -100
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[2, 4:] = 0
    args = dict(labels=labels, attention_mask=mask, temperature=1.5, alpha=0.3, chunk_size=4, fused=fused)
    with_ce, without = kd(hs, head, teacher, teacher_ce=True, **args), kd(hs, head, teacher, **args)
    idx, targets = counted_positions((3, 6), labels, mask, "cpu")
    nll = -full.reshape(-1, V)[idx].gather(-1, targets[:, None])[:, 0]
    expected = torch.zeros(3).index_add_(0, idx // 6, nll)
    assert torch.allclose(with_ce.row_teacher_ce, expected, atol=1e-5)
    assert without.row_teacher_ce is None and torch.allclose(with_ce.loss, without.loss)
    # the student's CE minus the teacher's is 0 when the student is the teacher
    if form == "logits":
        same = KDObjective(teacher_ce=True)(t_logits, torch.eye(V), teacher, labels=labels, attention_mask=mask)
        assert torch.allclose(same.row_ce, same.row_teacher_ce, atol=1e-5)


def test_teacher_ce_costs_no_second_teacher_head_product():
    """The online teacher's logits of a chunk serve its KL and its CE at the labels alike."""
    hs, head, t_logits, labels = _setup(batch=3, length=9)
    t_hidden, t_head = torch.randn(3, 9, 5), torch.randn(V, 5)
    calls = []

    def spy(logits):
        calls.append(logits.shape[0])
        return logits

    kd(hs, head, TeacherHidden(t_hidden, t_head, spy), labels=labels, chunk_size=4, teacher_ce=True)
    assert len(calls) == 6  # ceil(24 / 4) chunks, one teacher head product each


def test_teacher_ce_needs_labels_and_topk_needs_label_logprobs():
    hs, head, t_logits, labels = _setup()
    with pytest.raises(ValueError, match="teacher_ce needs labels"):
        kd(hs, head, TeacherLogits(t_logits), teacher_ce=True)
    vals, ids = F.log_softmax(t_logits, -1).topk(4, -1)
    with pytest.raises(ValueError, match="needs label_logprobs"):
        kd(hs, head, TeacherTopK(vals, ids), labels=labels, teacher_ce=True)
    with pytest.raises(ValueError, match="label_logprobs"):
        TeacherTopK(vals, ids, torch.zeros(2, 3))
