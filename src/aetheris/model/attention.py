"""The attention block kept from a teacher: GQA, RoPE (full or partial, halves or interleaved pairs),
optional QK-norm (per head or full width), biases, sliding window and score soft-capping."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import AetherisConfig
from .norm import block_norm


def rope(
    x: torch.Tensor, positions: torch.Tensor, theta: float, rotary_dim: int | None = None, interleaved: bool = False
) -> torch.Tensor:
    """Rotary embedding of the first `rotary_dim` features of each head (the rest pass through).
    x (b, h, l, d), positions (b, l)."""
    d = rotary_dim or x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    angles = positions.float()[..., None] * inv_freq  # (b, l, d/2)
    return rotate(x, angles.cos()[:, None].to(x.dtype), angles.sin()[:, None].to(x.dtype), interleaved)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool = False) -> torch.Tensor:
    """Rotate feature pairs of x's first 2 * cos.shape[-1] features by the angles whose cos/sin are
    given (one per pair): halves (i, i + r/2) as Llama/HF pair them, or neighbours (2i, 2i + 1) as Cohere."""
    d = 2 * cos.shape[-1]
    rot, rest = x[..., :d], x[..., d:]
    if interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        rot = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
    else:
        x1, x2 = rot.chunk(2, dim=-1)
        rot = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return torch.cat([rot, rest], dim=-1)


def softcapped_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float | None, cap: float
) -> torch.Tensor:
    """Attention whose scores are soft-capped, `cap * tanh(s / cap)` (Gemma 2), which SDPA cannot do."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-1, -2)) * (scale if scale is not None else q.shape[-1] ** -0.5)
    scores = (cap * torch.tanh(scores / cap)).masked_fill(~allowed, float("-inf"))
    return scores.float().softmax(-1).to(q.dtype) @ v


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
        self.rotary_dim, self.interleaved = config.rotary_dim, config.rope_interleaved
        self.softcap = config.attn_logit_softcapping
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=config.attention_out_bias)
        # QK-norm over head_dim (shared by heads), or over the whole projection before the head split
        self.full_width_qk_norm = full = config.qk_norm_scope == "full"
        q_dim = self.heads * self.head_dim if full else self.head_dim
        k_dim = self.kv_heads * self.head_dim if full else self.head_dim
        self.q_norm = block_norm(config, q_dim) if config.qk_norm else None
        self.k_norm = block_norm(config, k_dim) if config.qk_norm else None

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache=None,
    ) -> torch.Tensor:
        """x (b, l, d); positions (b, l); mask (b, total) with 1 on real tokens; cache or None."""
        b, seqlen, _ = x.shape
        q, k = self.q_proj(x), self.k_proj(x)
        if self.q_norm is not None and self.full_width_qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(b, seqlen, self.heads, self.head_dim)
        k = k.view(b, seqlen, self.kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, seqlen, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None and not self.full_width_qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        if self.theta is not None:
            q = rope(q, positions, self.theta, self.rotary_dim, self.interleaved)
            k = rope(k, positions, self.theta, self.rotary_dim, self.interleaved)
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
        if self.softcap is not None:
            y = softcapped_attention(q, k, v, allowed, self.scaling, self.softcap)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=allowed, scale=self.scaling, enable_gqa=self.kv_heads != self.heads
            )
        return self.o_proj(y.transpose(1, 2).reshape(b, seqlen, -1))
