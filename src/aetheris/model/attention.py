"""The attention block kept from a teacher: GQA, RoPE, optional QK-norm and sliding window."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import AetherisConfig
from .mixer import RMSNorm


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding, half-split convention (Llama/HF): x (b, h, l, d), positions (b, l)."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    angles = positions.float()[..., None] * inv_freq  # (b, l, d/2)
    cos = torch.cat([angles.cos()] * 2, -1)[:, None].to(x.dtype)
    sin = torch.cat([angles.sin()] * 2, -1)[:, None].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, config: AetherisConfig, layer_idx: int, sliding: bool) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.heads, self.kv_heads, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, config.head_dim,
        )  # fmt: skip
        self.window = config.sliding_window if sliding else None
        self.scaling = config.attn_scaling
        self.theta = config.attn_rope_theta[config.layout[:layer_idx].count("A")]  # None: no RoPE
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps) if config.qk_norm else None

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache=None,
    ) -> torch.Tensor:
        """x (b, l, d); positions (b, l); mask (b, total) with 1 on real tokens; cache or None."""
        b, seqlen, _ = x.shape
        q = self.q_proj(x).view(b, seqlen, self.heads, self.head_dim)
        k = self.k_proj(x).view(b, seqlen, self.kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, seqlen, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        if self.theta is not None:
            q, k = rope(q, positions, self.theta), rope(k, positions, self.theta)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
            seen = cache.layers[self.layer_idx].get_seq_length()
        else:
            seen = seqlen

        # Absolute positions of the keys returned (a sliding cache returns only the recent ones).
        k_pos = torch.arange(seen - k.shape[2], seen, device=x.device)
        q_pos = torch.arange(seen - seqlen, seen, device=x.device)
        allowed = k_pos[None, :] <= q_pos[:, None]
        if self.window is not None:
            allowed &= q_pos[:, None] - k_pos[None, :] < self.window
        allowed = allowed[None, None].expand(b, 1, seqlen, k.shape[2])
        if mask is not None:
            if mask.shape[-1] < seen:  # a mask for the new tokens only: the cached ones were real
                mask = F.pad(mask, (seen - mask.shape[-1], 0), value=1)
            allowed = allowed & mask[:, None, None, k_pos].bool()
            # A padded query sees nothing; let it see itself so softmax stays finite.
            allowed = allowed | (k_pos[None, :] == q_pos[:, None])[None, None]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, scale=self.scaling, enable_gqa=self.kv_heads != self.heads
        )
        return self.o_proj(y.transpose(1, 2).reshape(b, seqlen, -1))
