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

Shapes: x (b, l, gx, p); dt (b, l, h), already positive (softplus applied by the caller);
A (h,), negative; B (b, l, gB, n) and C (b, l, gC, n), where h is a multiple of gx, gB and gC
(x, B and C may be shared by groups of heads, as V and K are in grouped-query attention: dt
says how many heads there are); D (h,) or None; state (b, h, p, n). y is (b, l, h, p).
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F

ScanImpl = Literal["auto", "reference", "chunked", "cuda"]
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


def _segsum(a: torch.Tensor) -> torch.Tensor:
    """a (..., T) -> (..., T, T) with out[i, j] = a[j+1] + ... + a[i] for j <= i, -inf above.

    Summing a masked copy (rather than differencing one cumsum) keeps it exact for long chunks.
    """
    T = a.shape[-1]
    a = a[..., None].expand(*a.shape, T)  # a[..., i, j] = a_i
    strict = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=-1)
    a = a.masked_fill(~strict, 0.0)
    out = torch.cumsum(a, dim=-2)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device))
    return out.masked_fill(~causal, float("-inf"))


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
    """Blocked SSD. Same contract and result as `ssd_reference`, O(L) work."""
    (b, seqlen, _, p), h, n = x.shape, dt.shape[2], B.shape[-1]
    pad = (-seqlen) % chunk_size
    if pad:  # dt = 0 on padding: no decay and no input, so the final state is untouched
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    c, q = x.shape[1] // chunk_size, chunk_size

    # Head-major, contiguous once: every chunk is then a free view and every matmul is dense.
    a = (dt * A).transpose(1, 2).reshape(b, h, c, q)  # log-decay per step
    xdt = (repeat_groups(x, h) * dt[..., None]).transpose(1, 2).reshape(b, h, c, q, p)
    Bc = repeat_groups(B, h).transpose(1, 2).reshape(b, h, c, q, n)
    Cc = repeat_groups(C, h).transpose(1, 2).reshape(b, h, c, q, n)
    a_cum = torch.cumsum(a, dim=-1)

    # 1. within each chunk: y = (C Bᵀ ∘ L) (x dt), L[i, j] = exp(a_{j+1} + ... + a_i)
    L = torch.exp(_segsum(a))  # (b, h, c, q, q)
    y = (Cc @ Bc.transpose(-1, -2) * L) @ xdt  # (b, h, c, q, p)

    # 2. each chunk's own contribution to the state at its end
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, h, c, q)
    chunk_states = (xdt * decay_to_end[..., None]).transpose(-1, -2) @ Bc  # (b, h, c, p, n)

    # 3. carry the state across chunks: the only sequential part, one step per chunk
    chunk_decay = torch.exp(a_cum[..., -1])  # (b, h, c)
    state = x.new_zeros(b, h, p, n) if initial_state is None else initial_state.to(x.dtype)
    states_in = []
    for i in range(c):
        states_in.append(state)
        state = state * chunk_decay[:, :, i, None, None] + chunk_states[:, :, i]
    states_in = torch.stack(states_in, dim=2)  # (b, h, c, p, n): state entering each chunk

    # 4. what the incoming state adds to each position: y += exp(a_cum) * C · S_in
    y = y + (Cc @ states_in.transpose(-1, -2)) * torch.exp(a_cum)[..., None]

    y = y.reshape(b, h, c * q, p).transpose(1, 2)[:, :seqlen]
    if D is not None:
        y = y + D[:, None] * repeat_groups(x[:, :seqlen], h)
    return y, state


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
    raise ValueError(f"ssm_impl={impl!r}: expected one of 'auto', 'reference', 'chunked', 'cuda'")
