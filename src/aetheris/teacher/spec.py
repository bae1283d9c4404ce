"""What a teacher is made of, as plain tensors: the input the student initialiser reads.

Every tensor here is the teacher's own parameter or a view of it (fused `qkv_proj` and
`gate_up_proj` are sliced; GPT-NeoX's per-head interleaved `query_key_value` is the one copy), so
a spec costs almost no memory and stays frozen with the teacher. The conventions that differ
between architectures are fields, never implied by a name: read `NormSpec.weight_offset`,
`RopeSpec.interleaved`, `LayerSpec.parallel`, `TeacherSpec.embed_scale` and you can reproduce
any supported teacher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F


@dataclass
class NormSpec:
    """`y = normalise(x) * (weight_offset + weight) + bias` over the last dimension.

    rmsnorm: `x / sqrt(mean(x^2) + eps)`; layernorm: `(x - mean) / sqrt(var + eps)`.
    Gemma stores `weight` around 0 and applies `1 + weight`: its `weight_offset` is 1.0.
    """

    kind: Literal["rmsnorm", "layernorm"]
    weight: torch.Tensor
    eps: float
    weight_offset: float = 0.0
    bias: torch.Tensor | None = None

    def scale(self) -> torch.Tensor:
        """The multiplier actually applied: `weight_offset + weight` (a new tensor)."""
        return self.weight + self.weight_offset

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The norm on `x`, computed in fp32 and returned in x's dtype (the plain reference)."""
        x32 = x.float()
        if self.kind == "layernorm":
            x32 = x32 - x32.mean(-1, keepdim=True)
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * self.scale().float()
        return (y if self.bias is None else y + self.bias.float()).to(x.dtype)


@dataclass
class RopeSpec:
    """Rotary position embedding of one layer.

    `inv_freq` has `rotary_dim / 2` entries; angles are `position * inv_freq`, and cos/sin are
    multiplied by `attention_scaling` (1.0 except for YaRN-like scalings). `interleaved` pairs
    dimensions (0,1),(2,3).. (Cohere); otherwise the halves (i, i + rotary_dim/2) are paired (Llama).
    """

    theta: float
    inv_freq: torch.Tensor
    attention_scaling: float = 1.0
    interleaved: bool = False
    rope_type: str = "default"

    @property
    def rotary_dim(self) -> int:
        return 2 * self.inv_freq.numel()


@dataclass
class AttentionSpec:
    """q/k/v/o projections in `nn.Linear` layout (out_features, in_features).

    Query heads `h` use key/value head `h // (num_heads // num_kv_heads)` (GQA). Scores are
    `q·k * scaling`, soft-capped as `cap * tanh(s / cap)` when `logit_softcap` is set.
    `q_norm`/`k_norm` act before rotary embedding: per head over head_dim (`qk_norm_scope="head"`:
    Qwen3, Gemma3) or over the whole projection before it is split into heads (`"full"`: OLMo 2).
    """

    q_weight: torch.Tensor
    k_weight: torch.Tensor
    v_weight: torch.Tensor
    o_weight: torch.Tensor
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scaling: float
    q_bias: torch.Tensor | None = None
    k_bias: torch.Tensor | None = None
    v_bias: torch.Tensor | None = None
    o_bias: torch.Tensor | None = None
    q_norm: NormSpec | None = None
    k_norm: NormSpec | None = None
    qk_norm_scope: Literal["head", "full"] = "head"
    rope: RopeSpec | None = None  # None: no positional encoding in this layer (Cohere2 global layers)
    sliding_window: int | None = None
    logit_softcap: float | None = None

    @property
    def kv_groups(self) -> int:
        return self.num_heads // self.num_kv_heads


@dataclass
class MLPSpec:
    """Gated `down(act(gate(x)) * up(x))`, or non-gated `down(act(up(x)))` when `gate_weight` is
    None (GPT-NeoX, Phi, StarCoder2: their fc1/c_fc is `up`, fc2/c_proj is `down`).
    `activation` is a transformers ACT2FN name."""

    gate_weight: torch.Tensor | None
    up_weight: torch.Tensor
    down_weight: torch.Tensor
    activation: str
    gate_bias: torch.Tensor | None = None
    up_bias: torch.Tensor | None = None
    down_bias: torch.Tensor | None = None

    @property
    def gated(self) -> bool:
        return self.gate_weight is not None

    @property
    def intermediate_size(self) -> int:
        return self.up_weight.shape[0]

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """Per-neuron activations, `act(gate x) * (up x)` or `act(up x)`: (..., intermediate)."""
        from transformers.activations import ACT2FN

        up = F.linear(x, self.up_weight, self.up_bias)
        if not self.gated:
            return ACT2FN[self.activation](up)
        return ACT2FN[self.activation](F.linear(x, self.gate_weight, self.gate_bias)) * up

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP on `x` (the plain reference)."""
        return F.linear(self.activations(x), self.down_weight, self.down_bias)


@dataclass
class LayerSpec:
    """One decoder block.

    Sequential (`parallel=False`), with r = `residual_scale` (Granite's residual multiplier):
        h = x + r * attn_out_norm(attn(attn_norm(x)));  y = h + r * mlp_out_norm(mlp(mlp_norm(h)))
    Parallel (`parallel=True`: Cohere, Phi, GPT-NeoX): y = x + r * attn(attn_norm(x)) + r * mlp(mlp_norm(x)),
    where `mlp_norm is attn_norm` when both branches read one norm (Cohere, Phi).
    Absent norms are identity: `attn_out_norm`/`mlp_out_norm` exist in Gemma's sandwich layout and
    OLMo 2's post-norm layout, which has no `attn_norm`/`mlp_norm`.
    """

    index: int
    layer_type: str  # "full_attention" or "sliding_attention"
    attention: AttentionSpec
    mlp: MLPSpec
    attn_norm: NormSpec | None
    mlp_norm: NormSpec | None
    attn_out_norm: NormSpec | None = None
    mlp_out_norm: NormSpec | None = None
    parallel: bool = False
    residual_scale: float = 1.0


@dataclass
class TeacherSpec:
    """The whole teacher.

    logits = softcap((lm_head(final_norm(layers(embed_tokens[ids] * embed_scale))) + lm_head_bias) * logit_scale),
    with softcap(z) = cap * tanh(z / cap) when `final_logit_softcap` is set (Phi's head has a bias).
    """

    model_type: str
    architecture: str
    hidden_size: int
    vocab_size: int
    embed_tokens: torch.Tensor
    embed_scale: float
    final_norm: NormSpec
    lm_head: torch.Tensor
    tied_embeddings: bool
    logit_scale: float
    final_logit_softcap: float | None
    layers: list[LayerSpec] = field(default_factory=list)
    lm_head_bias: torch.Tensor | None = None
    dtype: torch.dtype = torch.float32
    config: object | None = None  # the teacher's transformers config (special token ids, context length)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def rope_thetas(self) -> dict[str, float | None]:
        """Rope base per layer type (None where that layer type has no rotary embedding)."""
        out: dict[str, float | None] = {}
        for layer in self.layers:
            rope = layer.attention.rope
            out.setdefault(layer.layer_type, None if rope is None else rope.theta)
        return out

    def num_parameters(self) -> int:
        """Distinct parameter elements referenced by the spec (tied tensors counted once)."""
        seen = {(t.data_ptr(), t.numel()) for t in _tensors(self)}  # views of a fused weight: distinct
        return sum(numel for _, numel in seen)


def _tensors(obj: object):
    """Every tensor reachable through the spec dataclasses."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, list):
        for item in obj:
            yield from _tensors(item)
    elif hasattr(obj, "__dataclass_fields__"):
        for name in obj.__dataclass_fields__:
            value = getattr(obj, name)
            if name != "inv_freq":  # a buffer, not a parameter
                yield from _tensors(value)
