"""The sparse MoE feed-forward block: teacher-shaped experts (SwiGLU by default), top-k router,
dropless dispatch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from .configuration import AetherisConfig


class Expert(nn.Module):
    """One feed-forward expert: gated `down(act(gate(x)) * up(x))` (SwiGLU with silu), or non-gated
    `down(act(up(x)))` (GPT-NeoX/Phi's GELU fc1/fc2), with or without biases."""

    def __init__(self, hidden: int, intermediate: int, act: str = "silu", gated: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=bias) if gated else None
        self.up_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.down_proj = nn.Linear(intermediate, hidden, bias=bias)
        self.act = ACT2FN[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is None:
            return self.down_proj(self.act(self.up_proj(x)))
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class SwiGLU(Expert):
    """The default expert: gated, no biases."""

    def __init__(self, hidden: int, intermediate: int, act: str = "silu") -> None:
        super().__init__(hidden, intermediate, act)


class MoE(nn.Module):
    def __init__(self, config: AetherisConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.top_k = config.num_experts_per_tok
        self.router = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.experts = nn.ModuleList(
            Expert(config.hidden_size, config.moe_intermediate_size, config.hidden_act, config.mlp_gated, config.mlp_bias)
            for _ in range(config.num_experts)
        )
        # tokens each expert processed in the last forward (utilisation statistics)
        self.register_buffer("last_tokens_per_expert", torch.zeros(config.num_experts, dtype=torch.long),
                             persistent=False)  # fmt: skip

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (b, l, d) -> (y (b, l, d), router logits (b*l, E) in fp32)."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        logits = self.router(x).float()
        probs, expert = self.select(logits)
        if x.shape[0] == 1:  # decoding one sequence: no sort/scatter for a single token
            y = self.one_token(x, probs, expert)
        else:
            y = self.dispatch(x, renormalise(probs), expert)
        return y.reshape(shape), logits

    def select(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Router logits (T, E) -> the top-k (probabilities (T, k), experts (T, k)); fp32 softmax."""
        return logits.softmax(dim=-1).topk(self.top_k, dim=-1)

    def dispatch(self, x: torch.Tensor, weight: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
        """Dropless dispatch of T tokens: sort the (token, slot) pairs by expert, run each expert on its group."""
        flat_expert = expert.reshape(-1)
        order = torch.argsort(flat_expert, stable=True)
        counts = torch.bincount(flat_expert, minlength=len(self.experts))
        token = order // self.top_k
        groups = x[token].split(counts.tolist())
        out = torch.cat([e(g) if len(g) else g for e, g in zip(self.experts, groups)])  # idle experts: skip
        out = out * weight.reshape(-1)[order, None].to(out.dtype)
        y = torch.zeros_like(x).index_add_(0, token, out.to(x.dtype))  # autocast may change out's dtype
        self.last_tokens_per_expert.copy_(counts)
        return y

    def one_token(self, x: torch.Tensor, probs: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
        """The same result for x (1, d) and its top-k (probs, experts), calling those experts directly.

        `dispatch` is the reference it is tested against. A top-1 weight is exactly 1.0, so without a
        gradient to carry, neither the weight nor the product is computed.
        """
        self.last_tokens_per_expert.zero_().index_fill_(0, expert[0], 1)  # top-k experts are distinct
        if self.top_k == 1 and not probs.requires_grad:
            return self.experts[expert.item()](x).to(x.dtype)
        chosen = expert[0].tolist()
        weight = renormalise(probs)
        y = sum(self.experts[e](x) * weight[:, slot, None].to(x.dtype) for slot, e in enumerate(chosen))
        return y.to(x.dtype)


def renormalise(probs: torch.Tensor) -> torch.Tensor:
    """Top-k router probabilities (T, k) -> weights summing to 1, as p / p.detach(): exactly 1.0 for
    top-1 (so identical experts reproduce the dense MLP), yet the router still receives d(output)/dp."""
    return probs / probs.detach().sum(-1, keepdim=True)


def router_losses(
    router_logits: list[torch.Tensor], top_k: int, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Switch load-balancing loss N * sum_i f_i * P_i and router z-loss, averaged over MoE blocks.

    f_i: fraction of routed (token, slot) pairs sent to expert i; P_i: mean router probability of
    expert i; z-loss: mean squared logsumexp of the logits. `mask` (T,) excludes padding.
    """
    lb, z = [], []
    for logits in router_logits:
        n = logits.shape[-1]
        w = torch.ones(logits.shape[0], device=logits.device) if mask is None else mask.float()
        probs = logits.softmax(-1)
        chosen = F.one_hot(probs.topk(top_k, dim=-1).indices, n).sum(1).float()  # (T, E)
        f = (chosen * w[:, None]).sum(0) / (w.sum() * top_k)
        P = (probs * w[:, None]).sum(0) / w.sum()
        lb.append(n * (f * P).sum())
        z.append((torch.logsumexp(logits, -1).pow(2) * w).sum() / w.sum())
    return torch.stack(lb).mean(), torch.stack(z).mean()


def weighted_router_loss(
    router_logits: list[torch.Tensor], config: AetherisConfig, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(aux, z, router_aux_loss_coef * aux + router_z_loss_coef * z): what the model adds to its loss."""
    aux, z = router_losses(router_logits, config.num_experts_per_tok, mask)
    return aux, z, config.router_aux_loss_coef * aux + config.router_z_loss_coef * z
