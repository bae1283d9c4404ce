"""The Mamba-2 state-space scan (SSD: one scalar decay per head), three ways.

The recurrence, per head h, for a state S of shape (head_dim p, d_state n):

    S_t = exp(dt_t * A) * S_{t-1} + dt_t * x_t ⊗ B_t
    y_t = S_t · C_t + D * x_t

- `ssd_reference`: that loop, one token at a time. The ground truth in tests.
- `ssd_chunked`: blocked SSD in plain PyTorch (Dao & Gu, 2024, "Transformers are SSMs", §6):
  quadratic attention-like form inside chunks of `chunk_size` tokens, the recurrence between
  chunks. O(L) work; takes an initial state and returns the final one. The CPU default.
- the CUDA path: mamba-ssm's fused Triton kernels, used only when the tensors are on a GPU and
  `mamba_ssm` imports.
- decoding: `ssd_step` (one token, pure; the reference) and `ssd_step_inplace` (the same update
  written into the cached state with fewer passes; what generation runs).

Shapes: x (b, l, gx, p); dt (b, l, h), already positive (softplus applied by the caller);
A (h,), negative; B (b, l, gB, n) and C (b, l, gC, n), where h is a multiple of gx, gB and gC
(x, B and C may be shared by groups of heads, as V and K are in grouped-query attention: dt
says how many heads there are); D (h,) or None; state (b, h, p, n). y is (b, l, h, p).
"""

from __future__ import annotations

import logging
from typing import Literal, get_args

import torch
import torch.nn.functional as F

ScanImpl = Literal["auto", "reference", "chunked", "cuda"]
SCAN_IMPLS: tuple[str, ...] = get_args(ScanImpl)  # the one list; AetherisConfig.ssm_impl checks against it
logger = logging.getLogger(__name__)


def repeat_groups(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(b, l, g, n) -> (b, l, heads, n): each group serves heads // g consecutive heads (GQA order)."""
    groups = t.shape[-2]
    if groups == heads:
        return t
    return t.repeat_interleave(heads // groups, dim=-2)


def ssd_step(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: x (b, gx, p), dt (b, h), B (b, gB, n), C (b, gC, n), state (b, h, p, n).

    Returns (y (b, h, p), new state). Used for decoding: the state never grows.
    """
    h = dt.shape[1]
    x, B, C = (repeat_groups(t, h) for t in (x, B, C))
    decay = torch.exp(dt * A)  # (b, h)
    state = state * decay[..., None, None] + (dt[..., None] * x)[..., None] * B[:, :, None, :]
    y = torch.einsum("bhpn,bhn->bhp", state, C)
    if D is not None:
        y = y + D[:, None] * x
    return y, state


def _group_view(t: torch.Tensor, gx: int, r: int) -> torch.Tensor:
    """(b, g, n) -> a view broadcastable to a state grouped as x groups heads, (b, gx, r, p, n).

    At x's group width (or per head) it is a view; at another width it is repeated per head first.
    """
    b, g, n = t.shape
    if g not in (gx, gx * r):
        t, g = repeat_groups(t[:, None], gx * r)[:, 0], gx * r
    return t.view(b, gx, g // gx, 1, n)


def ssd_step_inplace(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> torch.Tensor:
    """`ssd_step` for decoding: updates `state` in place and returns y (b, h, p).

    Fewer and smaller passes than `ssd_step` (its reference in tests): x and B are broadcast over
    the heads of their group instead of repeated, and the outer product is fused into the state
    update. In place, so not for autograd.
    """
    b, h, p, n = state.shape
    gx = x.shape[1]
    r = h // gx
    grouped = state.view(b, gx, r, p, n)  # a view: the update lands in `state`
    dt = dt.view(b, gx, r, 1)
    xg = x.view(b, gx, 1, p)
    decay = torch.exp(dt * A.view(gx, r, 1))
    grouped.mul_(decay.unsqueeze(-1)).addcmul_((dt * xg).unsqueeze(-1), _group_view(B, gx, r))
    y = (grouped * _group_view(C, gx, r)).sum(-1)  # (b, gx, r, p); beats a matmul at these sizes
    if D is not None:
        y = torch.addcmul(y, D.view(gx, r, 1), xg)
    return y.view(b, h, p)


def ssd_reference(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain sequential recurrence. Returns (y (b, l, h, p), final state (b, h, p, n))."""
    (b, seqlen, _, p), h, n = x.shape, dt.shape[2], B.shape[-1]
    state = x.new_zeros(b, h, p, n) if initial_state is None else initial_state
    ys = []
    for t in range(seqlen):
        y, state = ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t], D)
        ys.append(y)
    return torch.stack(ys, dim=1), state


def _head_major(t: torch.Tensor, heads: int, chunk: int) -> torch.Tensor:
    """(b, l, g, d) -> (b * heads * chunks, chunk, d), each group repeated for its heads: one copy."""
    b, seqlen, g, d = t.shape
    t = t.permute(0, 2, 1, 3)[:, :, None].expand(b, g, heads // g, seqlen, d)
    return t.reshape(b * heads * (seqlen // chunk), chunk, d)


def _segsum_exp(a: torch.Tensor) -> torch.Tensor:
    """a (..., T) -> (..., T, T) with out[i, j] = exp(a[j+1] + ... + a[i]) for j <= i, 0 above.

    Summing a masked copy (rather than differencing one cumsum) keeps it exact for long chunks.
    """
    T = a.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool, device=a.device).tril_()
    strict = causal.tril(-1)
    out = torch.where(strict, a[..., :, None], 0.0).cumsum(-2)  # out[i, j] = a_(j+1) + ... + a_i
    return out.masked_fill_(~causal, float("-inf")).exp_()


def ssd_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocked SSD. Same contract and result as `ssd_reference`, O(L) work.

    Every chunk of every head is one (chunk, ·) matrix of a batch of b·h·c, so each step below is one
    batched matmul or one elementwise pass; the layout is head-major so that no step copies.
    """
    (b, seqlen, gx, p), h, n = x.shape, dt.shape[2], B.shape[-1]
    pad = (-seqlen) % chunk_size
    if pad:  # dt = 0 on padding: no decay and no input, so the final state is untouched
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    c, q = x.shape[1] // chunk_size, chunk_size
    bhc = b * h * c

    dt_hm = dt.transpose(1, 2).contiguous().view(b, h, c, q)
    a = dt_hm * A[:, None, None]  # log-decay per step
    a_cum = torch.cumsum(a, dim=-1)
    # x * dt, head-major, in one pass: x (b, l, gx, p) broadcast over the heads of its group. Both
    # factors contiguous in head-major order, so the product is too and the reshape is a view
    # (a permuted x would give a permuted product, and the reshape a second full copy).
    x_hm = x.transpose(1, 2).contiguous()[:, :, None]  # (b, gx, 1, l, p): 1/(h/gx) of xdt's size
    xdt = (x_hm * dt_hm.view(b, gx, h // gx, c * q, 1)).view(bhc, q, p)
    Bc, Cc = _head_major(B, h, q), _head_major(C, h, q)  # (bhc, q, n)

    # 1. within each chunk: y = (C Bᵀ ∘ L) (x dt), L[i, j] = exp(a_{j+1} + ... + a_i)
    L = _segsum_exp(a.reshape(bhc, q))
    y = torch.bmm(torch.bmm(Cc, Bc.transpose(1, 2)) * L, xdt)  # (bhc, q, p)

    # 2. each chunk's own contribution to the state at its end: (x dt)ᵀ diag(decay to end) B
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum).reshape(bhc, q, 1)
    chunk_states = torch.bmm(xdt.transpose(1, 2), Bc * decay_to_end).view(b, h, c, p, n)

    # 3. carry the state across chunks: the only sequential part, one step per chunk
    chunk_decay = torch.exp(a_cum[..., -1])  # (b, h, c)
    state = x.new_zeros(b, h, p, n) if initial_state is None else initial_state.to(x.dtype)
    states_in = []
    for i in range(c):
        states_in.append(state)
        state = state * chunk_decay[:, :, i, None, None] + chunk_states[:, :, i]
    states_in = torch.stack(states_in, dim=2).view(bhc, p, n)  # the state entering each chunk

    # 4. what the incoming state adds to each position: y += exp(a_cum) C · S_in
    y = torch.baddbmm(y, Cc * torch.exp(a_cum).reshape(bhc, q, 1), states_in.transpose(1, 2))

    # back to (b, l, h, p) (one copy, in the reshape), plus the D skip with x shared per group
    y = y.view(b, gx, h // gx, c * q, p).permute(0, 3, 1, 2, 4)[:, :seqlen]
    if D is not None:
        y = torch.addcmul(y, x[:, :seqlen, :, None, :], D.view(gx, h // gx, 1))
    return y.reshape(b, seqlen, h, p), state


_cuda_scan = None
_cuda_checked = False


def _load_cuda_scan():
    """mamba-ssm's fused kernel, or None (logged once) when it cannot be imported."""
    global _cuda_scan, _cuda_checked
    if not _cuda_checked:
        _cuda_checked = True
        try:
            from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

            _cuda_scan = mamba_chunk_scan_combined
        except Exception as e:  # ImportError, or a broken Triton/CUDA install
            logger.warning("mamba-ssm kernels unavailable (%s); using the PyTorch chunked scan on GPU.", e)
    return _cuda_scan


def ssd_cuda(x, dt, A, B, C, D=None, initial_state=None, chunk_size=64):
    """mamba-ssm's Triton SSD. It wants B and C with the same group count, so both go to per-head."""
    kernel = _load_cuda_scan()
    if kernel is None:
        raise RuntimeError(
            "impl='cuda' needs a CUDA device and the mamba-ssm package (pip install mamba-ssm)."
        )
    h = dt.shape[2]
    x = repeat_groups(x, h)
    if B.shape[2] != C.shape[2]:
        B, C = repeat_groups(B, h), repeat_groups(C, h)
    y, final = kernel(x, dt, A, B, C, chunk_size, D=D, initial_states=initial_state, return_final_states=True)
    return y, final


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
    impl: ScanImpl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one entry point. `auto`: mamba-ssm's kernel on GPU when installed, else `chunked`."""
    if impl == "auto":
        impl = "cuda" if x.is_cuda and _load_cuda_scan() is not None else "chunked"
    if impl == "reference":
        return ssd_reference(x, dt, A, B, C, D, initial_state)
    if impl == "chunked":
        return ssd_chunked(x, dt, A, B, C, D, initial_state, chunk_size)
    if impl == "cuda":
        return ssd_cuda(x, dt, A, B, C, D, initial_state, chunk_size)
    raise ValueError(f"ssm_impl={impl!r}: expected one of {SCAN_IMPLS}")
