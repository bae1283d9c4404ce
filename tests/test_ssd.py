"""The chunked scan against the plain recurrence: values, states and gradients."""

import pytest
import torch

from aetheris.model.ssd import ssd_chunked, ssd_reference, ssd_scan, ssd_step, ssd_step_inplace


def make_inputs(b, seqlen, h, gB, gC, p, n, dtype, seed=0, requires_grad=False, gx=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, seqlen, gx or h, p, generator=g, dtype=dtype)
    dt = torch.nn.functional.softplus(torch.randn(b, seqlen, h, generator=g, dtype=dtype) - 1)
    A = -torch.exp(torch.rand(h, generator=g, dtype=dtype) * 2)
    B = torch.randn(b, seqlen, gB, n, generator=g, dtype=dtype)
    C = torch.randn(b, seqlen, gC, n, generator=g, dtype=dtype)
    D = torch.randn(h, generator=g, dtype=dtype)
    s0 = torch.randn(b, h, p, n, generator=g, dtype=dtype)
    tensors = [x, dt, A, B, C, D, s0]
    if requires_grad:
        for t in tensors:
            t.requires_grad_(True)
    return tensors


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


SHAPES = [  # (b, L, heads, B groups, C groups, head_dim, d_state, chunk, x groups)
    (1, 1, 2, 1, 2, 4, 4, 8, 2),  # L = 1
    (2, 37, 6, 2, 6, 8, 8, 16, 6),  # L not a multiple of the chunk, GQA-style B
    (3, 64, 4, 4, 4, 5, 3, 16, 4),  # L a multiple of the chunk
    (1, 130, 3, 1, 3, 16, 16, 64, 3),
    (2, 9, 4, 2, 2, 4, 6, 4, 4),
    (2, 45, 6, 3, 6, 8, 8, 16, 3),  # x and B at group width, as the mixer passes them (MambaInLlama)
    (1, 20, 4, 2, 1, 4, 4, 8, 1),  # one x group for all heads
]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_matches_reference(shape, dtype, tol, with_state):
    b, seqlen, h, gB, gC, p, n, chunk, gx = shape
    x, dt, A, B, C, D, s0 = make_inputs(b, seqlen, h, gB, gC, p, n, dtype, gx=gx)
    s0 = s0 if with_state else None
    y_ref, s_ref = ssd_reference(x, dt, A, B, C, D, s0)
    y, s = ssd_chunked(x, dt, A, B, C, D, s0, chunk_size=chunk)
    assert y.shape == y_ref.shape == (b, seqlen, h, p)
    assert s.shape == s_ref.shape == (b, h, p, n)
    assert rel_err(y, y_ref) <= tol
    assert rel_err(s, s_ref) <= tol


@pytest.mark.parametrize("gx", [4, 2])
def test_chunked_gradients_match_reference(gx):
    shape = (2, 21, 4, 2, 4, 6, 5)
    ref = make_inputs(*shape, torch.float64, requires_grad=True, gx=gx)
    chk = [t.detach().clone().requires_grad_(True) for t in ref]
    w = torch.randn(2, 21, 4, 6, dtype=torch.float64)
    ws = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    y, s = ssd_reference(*ref)
    ((y * w).sum() + (s * ws).sum()).backward()
    y2, s2 = ssd_chunked(*chk, chunk_size=8)
    ((y2 * w).sum() + (s2 * ws).sum()).backward()
    for a, b in zip(ref, chk):
        assert rel_err(b.grad, a.grad) <= 1e-10


def test_splitting_a_sequence_carries_the_state():
    x, dt, A, B, C, D, _ = make_inputs(2, 50, 4, 2, 4, 8, 8, torch.float64)
    y_full, s_full = ssd_chunked(x, dt, A, B, C, D, chunk_size=16)
    y1, s1 = ssd_chunked(x[:, :23], dt[:, :23], A, B[:, :23], C[:, :23], D, chunk_size=16)
    y2, s2 = ssd_chunked(x[:, 23:], dt[:, 23:], A, B[:, 23:], C[:, 23:], D, s1, chunk_size=16)
    assert rel_err(torch.cat([y1, y2], 1), y_full) <= 1e-12
    assert rel_err(s2, s_full) <= 1e-12


def test_step_equals_one_token_scan():
    x, dt, A, B, C, D, s0 = make_inputs(2, 1, 4, 2, 4, 8, 8, torch.float64)
    y, s = ssd_step(s0, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D)
    y_ref, s_ref = ssd_reference(x, dt, A, B, C, D, s0)
    torch.testing.assert_close(y, y_ref[:, 0], rtol=0, atol=1e-12)
    torch.testing.assert_close(s, s_ref, rtol=0, atol=1e-12)


def test_dispatch_and_bad_impl():
    x, dt, A, B, C, D, _ = make_inputs(1, 10, 2, 1, 2, 4, 4, torch.float64)
    y_auto, _ = ssd_scan(x, dt, A, B, C, D, chunk_size=4)  # CPU: auto -> chunked
    y_ref, _ = ssd_scan(x, dt, A, B, C, D, impl="reference")
    assert rel_err(y_auto, y_ref) <= 1e-10
    with pytest.raises(ValueError, match="expected one of"):
        ssd_scan(x, dt, A, B, C, D, impl="triton")


@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_grouped_x_equals_explicitly_repeated_x(impl):
    # x at the key/value width (3 groups for 6 heads), as the mixer passes it
    x, dt, A, B, C, D, s0 = make_inputs(2, 19, 6, 3, 6, 4, 4, torch.float64)
    xg = x[:, :, ::2].contiguous()
    y_g, s_g = ssd_scan(xg, dt, A, B, C, D, s0, chunk_size=8, impl=impl)
    y_r, s_r = ssd_scan(xg.repeat_interleave(2, dim=2), dt, A, B, C, D, s0, chunk_size=8, impl=impl)
    # Shared x broadcasts into other matmul shapes than repeated x: equal to float64 rounding.
    assert rel_err(y_g, y_r) <= 1e-12 and rel_err(s_g, s_r) <= 1e-12
    y1, s1 = ssd_step(s0, xg[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D)
    torch.testing.assert_close(
        y1,
        y_r[:, 0]
        if s0 is None
        else ssd_reference(xg[:, :1], dt[:, :1], A, B[:, :1], C[:, :1], D, s0)[0][:, 0],
    )


def test_chunked_without_skip_matches_reference():
    x, dt, A, B, C, _, s0 = make_inputs(2, 29, 6, 3, 6, 4, 5, torch.float64, gx=3)
    y_ref, s_ref = ssd_reference(x, dt, A, B, C, None, s0)
    y, s = ssd_chunked(x, dt, A, B, C, None, s0, chunk_size=8)
    assert rel_err(y, y_ref) <= 1e-10 and rel_err(s, s_ref) <= 1e-10


def test_causal_conv_equals_torch_depthwise_conv():
    from aetheris.model.mixer import causal_conv1d

    conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3, dtype=torch.float64)
    x = torch.randn(2, 11, 6, dtype=torch.float64)
    want = conv(x.transpose(1, 2))[..., :11].transpose(1, 2)
    w = conv.weight[:, 0, :]
    torch.testing.assert_close(causal_conv1d(x, w, conv.bias, 11), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(causal_conv1d(x, w, conv.bias, 3), want[:, -3:], rtol=0, atol=1e-12)
    torch.testing.assert_close(causal_conv1d(x[:, :2], w, conv.bias, 2), want[:, :2], rtol=0, atol=1e-12)


@pytest.mark.parametrize("gx,gB,gC", [(2, 2, 6), (6, 2, 6), (1, 3, 1), (2, 3, 6), (6, 6, 6)])
@pytest.mark.parametrize("with_skip", [True, False])
def test_inplace_step_matches_the_pure_step(gx, gB, gC, with_skip):
    x, dt, A, B, C, D, s0 = make_inputs(2, 1, 6, gB, gC, 4, 5, torch.float32, gx=gx)
    D = D if with_skip else None
    y_ref, s_ref = ssd_step(s0, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D)
    state = s0.clone()
    y = ssd_step_inplace(state, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D)
    torch.testing.assert_close(y, y_ref)  # float32 tolerances: the two sum in different orders
    torch.testing.assert_close(state, s_ref)


def test_conv_step_equals_the_last_output_of_the_causal_conv():
    from aetheris.model.mixer import causal_conv1d, causal_conv1d_step

    x = torch.randn(2, 7, 6, dtype=torch.float64)
    w, bias = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    want = causal_conv1d(x, w, bias, 1)[:, 0]
    window = x.transpose(1, 2)[..., -5:]  # channels first, one input more than the kernel, as the cache returns it
    torch.testing.assert_close(causal_conv1d_step(window, w, bias), want, rtol=0, atol=1e-12)


def test_rms_norm_shortcut_equals_the_plain_formula():
    from aetheris.model.mixer import GatedRMSNorm, RMSNorm

    norm = RMSNorm(24, eps=1e-5)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(3, 5, 24) * 7
    torch.testing.assert_close(norm(x), norm.reference(x))  # fp32 rounding: F.rms_norm vs the formula
    gated, z = GatedRMSNorm(24), torch.randn(3, 5, 24)
    gated.weight.data.copy_(norm.weight)
    torch.testing.assert_close(gated(x, z), RMSNorm.reference(gated, x * torch.nn.functional.silu(z)))
    half = x.bfloat16()  # other dtypes keep the plain path: normalised in fp32
    assert torch.equal(norm(half), norm.reference(half))
