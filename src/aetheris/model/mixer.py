"""The SSM mixer block: Mamba-2 in the shape that attention weights can initialise.

MambaInLlama's correspondence: V -> x, K -> B, Q -> C, O -> out_proj, so x and B sit at the
teacher's key/value width and are shared by groups of heads exactly as GQA shares K and V.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import AetherisConfig
from .ssd import ssd_scan, ssd_step, ssd_step_inplace


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32:  # one call instead of eight (decoding runs 37 a token)
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return self.reference(x)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The plain formula, normalised in fp32; `forward`'s fp32 shortcut is tested against it."""
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class GatedRMSNorm(RMSNorm):
    """Mamba-2's output norm: RMSNorm(y * silu(z))."""

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return super().forward(y * F.silu(z))


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out_len: int) -> torch.Tensor:
    """Depthwise causal conv over time: x (b, l, ch), weight (ch, k) -> the last `out_len` outputs.

    out[t] = bias + sum_i weight[:, i] * x[t - k + 1 + i], zeros before the start. Same result as
    nn.Conv1d(groups=ch, padding=k-1), without moving channels first and back.
    """
    k = weight.shape[1]
    need = out_len + k - 1  # inputs that the wanted outputs read
    if x.shape[1] < need:
        x = F.pad(x, (0, 0, need - x.shape[1], 0))
    windows = x[:, -need:].unfold(1, k, 1)  # (b, out_len, ch, k): a view, no copy
    return (windows * weight).sum(-1) + bias  # one fused product pass beats k strided ones on CPU


def causal_conv1d_step(window: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`causal_conv1d`'s output for the newest token alone: window (b, ch, >= k) holds the latest
    inputs, channels first as the cache keeps them; weight (ch, k) -> (b, ch)."""
    return (window[..., -weight.shape[1] :] * weight).sum(-1) + bias


class SSMMixer(nn.Module):
    def __init__(self, config: AetherisConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.heads = config.num_attention_heads
        self.groups = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.d_state = config.d_state
        self.kernel = config.conv_kernel
        self.chunk_size = config.ssm_chunk_size
        self.impl = config.ssm_impl
        self.d_inner = self.heads * self.head_dim  # z, C: query width
        self.d_xb = self.groups * self.head_dim  # x: key/value width
        # in_proj rows, in order: [z | x | B | C | dt]
        self.sizes = [
            self.d_inner,
            self.d_xb,
            self.groups * self.d_state,
            self.heads * self.d_state,
            self.heads,
        ]
        self.in_proj = nn.Linear(config.hidden_size, sum(self.sizes), bias=False)
        conv_dim = sum(self.sizes[1:4])  # the conv runs over x, B, C
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, self.kernel, groups=conv_dim, padding=self.kernel - 1)
        self.dt_bias = nn.Parameter(torch.empty(self.heads))
        self.A_log = nn.Parameter(torch.empty(self.heads))
        self.D = nn.Parameter(torch.empty(self.heads))
        self.norm = GatedRMSNorm(self.d_inner, eps=config.rms_norm_eps)
        self.out_proj = nn.Linear(self.d_inner, config.hidden_size, bias=False)
        self.dt_range = (config.dt_min, config.dt_max, config.dt_init_floor)

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Mamba-2's init: A in [1, 16], dt log-uniform in [dt_min, dt_max], D = 1."""
        dt_min, dt_max, floor = self.dt_range
        self.A_log.copy_(torch.log(torch.empty_like(self.A_log).uniform_(1, 16)))
        u = torch.rand_like(self.dt_bias)
        dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.D.fill_(1.0)

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None, cache=None) -> torch.Tensor:
        """u (b, l, hidden); mask (b, l) with 0 on padding; cache: a transformers Cache or None."""
        state = cache.get_recurrent_state(self.layer_idx) if cache is not None else None
        if state is not None and u.shape[1] == 1 and not torch.is_grad_enabled():
            return self.step(u, state, cache, mask)
        b, seqlen, _ = u.shape
        if mask is not None:  # a padded position must not write into the state
            u = u * mask[..., None].to(u.dtype)
        z, xBC, dt = self.in_proj(u).split([self.sizes[0], sum(self.sizes[1:4]), self.heads], dim=-1)

        # depthwise causal conv over x, B, C, in (b, l, channels) layout so nothing is transposed;
        # the cache keeps the last `kernel` inputs (channels first, as transformers' cache has them)
        if cache is not None:
            xBC = cache.update_conv_state(xBC.transpose(1, 2), self.layer_idx, conv_kernel_size=self.kernel)
            xBC = xBC.transpose(1, 2)
        xBC = F.silu(causal_conv1d(xBC, self.conv1d.weight[:, 0, :], self.conv1d.bias, seqlen))
        if mask is not None:
            xBC = xBC * mask[..., None].to(xBC.dtype)
        x, B, C = xBC.split(self.sizes[1:4], dim=-1)

        # GQA-style: each of the `groups` x/B rows serves heads // groups SSM heads (the scan repeats)
        x = x.reshape(b, seqlen, self.groups, self.head_dim)
        B = B.reshape(b, seqlen, self.groups, self.d_state)
        C = C.reshape(b, seqlen, self.heads, self.d_state)
        dt = F.softplus(dt + self.dt_bias)
        A = -torch.exp(self.A_log.float()).to(x.dtype)

        if state is not None and seqlen == 1:
            y, state = ssd_step(state, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], self.D)
            y = y[:, None]
        else:
            y, state = ssd_scan(x, dt, A, B, C, self.D, state, self.chunk_size, self.impl)
        if cache is not None:
            cache.update_recurrent_state(state, self.layer_idx)

        y = self.norm(y.reshape(b, seqlen, self.d_inner), z)
        return self.out_proj(y)

    def step(self, u: torch.Tensor, state: torch.Tensor, cache, mask: torch.Tensor | None = None) -> torch.Tensor:
        """One token u (b, 1, hidden) on the cached conv window and SSM `state`, both updated in place.

        The decoding path (no autograd): the same result as `forward`'s general path, its reference in
        tests, in about half the passes: no transposes, the conv of the newest token only, grouped
        views instead of per-head copies, and no copy of the state back into the cache.
        """
        b = u.shape[0]
        if mask is not None:
            u = u * mask[..., None].to(u.dtype)
        z, xBC, dt = self.in_proj(u[:, 0]).split([self.sizes[0], sum(self.sizes[1:4]), self.heads], dim=-1)
        window = cache.update_conv_state(xBC[..., None], self.layer_idx, conv_kernel_size=self.kernel)
        xBC = F.silu(causal_conv1d_step(window, self.conv1d.weight.squeeze(1), self.conv1d.bias))
        if mask is not None:
            xBC = xBC * mask[:, -1:].to(xBC.dtype)
        x, B, C = xBC.split(self.sizes[1:4], dim=-1)
        dt = F.softplus(dt + self.dt_bias)
        A = -torch.exp(self.A_log.float()).to(x.dtype)
        y = ssd_step_inplace(
            state, x.view(b, self.groups, self.head_dim), dt, A,
            B.view(b, self.groups, self.d_state), C.view(b, self.heads, self.d_state), self.D,
        )  # fmt: skip
        y = self.norm(y.view(b, 1, self.d_inner), z[:, None])
        return self.out_proj(y)
