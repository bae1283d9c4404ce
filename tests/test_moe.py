"""The MoE block: dropless dispatch, dense equivalence, the load-balancing formula."""

import pytest
import torch
import torch.nn.functional as F

from aetheris import AetherisConfig
from aetheris.model.moe import MoE, SwiGLU, renormalise, router_losses


def moe(experts=4, k=1, hidden=16, inter=24):
    torch.manual_seed(0)
    cfg = AetherisConfig(
        vocab_size=10,
        hidden_size=hidden,
        layout="M",
        num_attention_heads=2,
        num_key_value_heads=1,
        num_experts=experts,
        num_experts_per_tok=k,
        moe_intermediate_size=inter,
    )
    return MoE(cfg, 0)


def test_every_token_goes_to_exactly_one_expert():
    block = moe()
    x = torch.randn(3, 50, 16)
    seen = []
    for e in block.experts:  # record which rows each expert receives
        e.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    y, logits = block(x)
    rows = torch.cat(seen)
    assert rows.shape[0] == 150 == int(block.last_tokens_per_expert.sum())
    # each input token appears exactly once among the expert inputs
    flat = x.reshape(-1, 16)
    match = (rows[:, None, :] == flat[None, :, :]).all(-1)
    assert match.sum(0).eq(1).all() and match.sum(1).eq(1).all()
    # and its output is exactly its chosen expert applied to it
    chosen = logits.argmax(-1)
    expected = torch.stack([block.experts[int(c)](t) for c, t in zip(chosen, flat)])
    torch.testing.assert_close(y.reshape(-1, 16), expected, rtol=1e-6, atol=1e-6)


def test_one_expert_for_every_token_is_exactly_the_dense_mlp():
    # Exact by construction: with a zero router every row ties the same way, so every token picks
    # one expert with weight p / p = 1.0; its group is x itself (same rows, order and shape), and
    # 0 + v = v in index_add_. The same product on the same shape is the same kernel on any CPU.
    block = moe()
    dense = SwiGLU(16, 24)
    for e in block.experts:
        e.load_state_dict(dense.state_dict())
    torch.nn.init.zeros_(block.router.weight)
    x = torch.randn(66, 16)
    y, _ = block(x)
    assert sorted(block.last_tokens_per_expert.tolist()) == [0, 0, 0, 66]
    assert torch.equal(y, dense(x))


def test_identical_experts_reproduce_the_dense_mlp():
    # Each expert multiplies its own group of tokens: smaller matrices, for which BLAS/oneDNN pick
    # other kernels by shape and CPU (AVX-512/AMX machines differ in the last bits). So this holds
    # to fp32 rounding, not bit for bit: torch's default fp32 tolerance (rtol 1.3e-6, atol 1e-5).
    block = moe()
    dense = SwiGLU(16, 24)
    for e in block.experts:
        e.load_state_dict(dense.state_dict())
    x = torch.randn(2, 33, 16)
    y, _ = block(x)
    assert (block.last_tokens_per_expert > 0).sum() >= 2  # really dispatched to several experts
    torch.testing.assert_close(y, dense(x))


def test_router_gets_gradient_through_the_top1_weight():
    block = moe()
    y, _ = block(torch.randn(2, 8, 16))
    y.sum().backward()
    assert block.router.weight.grad is not None and block.router.weight.grad.abs().sum() > 0


def test_load_balancing_loss_on_a_hand_worked_case():
    # 4 tokens, 2 experts. probs: softmax of [log .75, log .25] etc. so probabilities are exact.
    p = torch.tensor([[0.75, 0.25], [0.75, 0.25], [0.25, 0.75], [0.5 + 1e-3, 0.5 - 1e-3]])
    logits = p.log()
    # top-1 choices: 0, 0, 1, 0 -> f = [3/4, 1/4]; P = mean probs = [0.563.., 0.436..]
    # loss = N * sum f_i P_i = 2 * (0.75 * 0.56275 + 0.25 * 0.43725) = 2 * 0.531375 = 1.06275
    lb, z = router_losses([logits], top_k=1)
    assert abs(lb.item() - 1.06275) < 1e-6
    # z-loss: logsumexp(log p) = log 1 = 0 for every token
    assert abs(z.item()) < 1e-6
    # padding mask: drop the last token -> f = [2/3, 1/3], P = [(0.75+0.75+0.25)/3, (0.25+0.25+0.75)/3]
    lb_masked, _ = router_losses([logits], top_k=1, mask=torch.tensor([1, 1, 1, 0]))
    assert abs(lb_masked.item() - 2 * (2 / 3 * 1.75 / 3 + 1 / 3 * 1.25 / 3)) < 1e-6
    # z-loss on shifted logits: logsumexp(log p + 2) = 2 -> z = 4
    _, z2 = router_losses([logits + 2], top_k=1)
    assert abs(z2.item() - 4.0) < 1e-5


def test_top2_routing_weights_sum_to_one():
    block = moe(k=2)
    x = torch.randn(1, 10, 16)
    y, logits = block(x)
    top = F.softmax(logits, -1).topk(2, -1)
    w = top.values / top.values.sum(-1, keepdim=True)
    flat = x.reshape(-1, 16)
    expected = sum(
        w[:, j, None] * torch.stack([block.experts[int(e)](t) for e, t in zip(top.indices[:, j], flat)])
        for j in range(2)
    )
    torch.testing.assert_close(y.reshape(-1, 16), expected, rtol=1e-5, atol=1e-6)
    assert int(block.last_tokens_per_expert.sum()) == 20


@pytest.mark.parametrize("k", [1, 2])
def test_one_token_fast_path_matches_the_general_dispatch(k):
    block = moe(k=k)
    for x in torch.randn(6, 1, 1, 16):  # decoding: one token at a time
        y, logits = block(x)  # takes the direct-expert path
        counts = block.last_tokens_per_expert.clone()
        probs, expert = block.select(logits)
        y_ref = block.dispatch(x.reshape(1, 16), renormalise(probs), expert)  # the sort/scatter reference
        torch.testing.assert_close(y.reshape(1, 16), y_ref)
        assert torch.equal(counts, block.last_tokens_per_expert) and int(counts.sum()) == k


def test_one_token_fast_path_carries_the_router_gradient():
    block = moe()
    x = torch.randn(1, 1, 16)
    block(x)[0].sum().backward()
    fast = block.router.weight.grad.clone()
    block.zero_grad()
    logits = block.router(x.reshape(1, 16)).float()
    probs, expert = block.select(logits)
    block.dispatch(x.reshape(1, 16), renormalise(probs), expert).sum().backward()
    assert fast.abs().sum() > 0
    torch.testing.assert_close(fast, block.router.weight.grad)
