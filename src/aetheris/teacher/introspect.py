"""Read a loaded HF causal LM into a `TeacherSpec` (see spec.py for the conventions).

Architectures differ in a handful of conventions; each supported one is a row of `ARCHITECTURES`
rather than a branch in the code, so adding one means adding a row and a test.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from aetheris.errors import UserError
from aetheris.teacher.spec import AttentionSpec, LayerSpec, MLPSpec, NormSpec, RopeSpec, TeacherSpec


@dataclass(frozen=True)
class ArchConventions:
    norm_kind: str  # "rmsnorm" or "layernorm"
    norm_offset: float  # Gemma: weight applied as (1 + weight)
    parallel: bool  # Cohere: attention and MLP read the same normed input
    sandwich_norms: bool  # Gemma: extra norms on the attention and MLP outputs
    rope_interleaved: bool  # Cohere pairs (0,1),(2,3)..; Llama pairs (i, i + d/2)
    rope_on_full_layers: bool  # Cohere2 global layers use no positional encoding
    scaled_embeddings: bool  # Gemma multiplies embeddings by sqrt(hidden_size)


ARCHITECTURES: dict[str, ArchConventions] = {
    "llama": ArchConventions("rmsnorm", 0.0, False, False, False, True, False),
    "qwen3": ArchConventions("rmsnorm", 0.0, False, False, False, True, False),
    "gemma3_text": ArchConventions("rmsnorm", 1.0, False, True, False, True, True),
    "cohere2": ArchConventions("layernorm", 0.0, True, False, True, False, False),
}


class UnsupportedArchitectureError(UserError, ValueError):
    pass


def introspect(model: nn.Module) -> TeacherSpec:
    """Describe `model` (a *ForCausalLM of a supported architecture) as plain tensors."""
    config = model.config
    model_type = getattr(config, "model_type", type(model).__name__)
    arch_name = type(model).__name__
    conv = ARCHITECTURES.get(model_type)
    if conv is None or not hasattr(model, "model") or not hasattr(model, "lm_head"):
        raise UnsupportedArchitectureError(
            f"Unsupported teacher architecture {model_type!r} ({arch_name}); supported model types: "
            f"{', '.join(sorted(ARCHITECTURES))} (their *ForCausalLM classes)."
        )
    backbone = model.model
    embed = backbone.embed_tokens.weight
    layer_types = list(getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers)
    layers = [
        _layer(i, block, layer_types[i], conv, config, backbone.rotary_emb)
        for i, block in enumerate(backbone.layers)
    ]
    return TeacherSpec(
        model_type=model_type,
        architecture=arch_name,
        hidden_size=config.hidden_size,
        vocab_size=embed.shape[0],
        embed_tokens=embed,
        embed_scale=float(config.hidden_size**0.5) if conv.scaled_embeddings else 1.0,
        final_norm=_norm(backbone.norm, conv),
        lm_head=model.lm_head.weight,
        tied_embeddings=model.lm_head.weight.data_ptr() == embed.data_ptr(),
        logit_scale=float(getattr(config, "logit_scale", None) or 1.0),
        final_logit_softcap=getattr(config, "final_logit_softcapping", None),
        layers=layers,
        dtype=embed.dtype,
        config=config,
    )


def _layer(index, block, layer_type, conv: ArchConventions, config, rotary) -> LayerSpec:
    attn = block.self_attn
    with_rope = conv.rope_on_full_layers or layer_type == "sliding_attention"
    attention = AttentionSpec(
        q_weight=attn.q_proj.weight,
        k_weight=attn.k_proj.weight,
        v_weight=attn.v_proj.weight,
        o_weight=attn.o_proj.weight,
        q_bias=attn.q_proj.bias,
        k_bias=attn.k_proj.bias,
        v_bias=attn.v_proj.bias,
        o_bias=attn.o_proj.bias,
        num_heads=config.num_attention_heads,
        num_kv_heads=config.num_key_value_heads,
        head_dim=attn.head_dim,
        scaling=float(attn.scaling),
        q_norm=_norm(attn.q_norm, conv) if hasattr(attn, "q_norm") else None,
        k_norm=_norm(attn.k_norm, conv) if hasattr(attn, "k_norm") else None,
        rope=_rope(rotary, layer_type, config, conv) if with_rope else None,
        sliding_window=getattr(attn, "sliding_window", None),
        logit_softcap=getattr(config, "attn_logit_softcapping", None),
    )
    mlp = block.mlp
    mlp_spec = MLPSpec(
        gate_weight=mlp.gate_proj.weight,
        up_weight=mlp.up_proj.weight,
        down_weight=mlp.down_proj.weight,
        gate_bias=mlp.gate_proj.bias,
        up_bias=mlp.up_proj.bias,
        down_bias=mlp.down_proj.bias,
        activation=getattr(config, "hidden_activation", None) or config.hidden_act,
    )
    if conv.parallel:
        return LayerSpec(index, layer_type, attention, mlp_spec, _norm(block.input_layernorm, conv), None,
                         parallel=True)
    if conv.sandwich_norms:
        return LayerSpec(
            index, layer_type, attention, mlp_spec,
            attn_norm=_norm(block.input_layernorm, conv),
            attn_out_norm=_norm(block.post_attention_layernorm, conv),
            mlp_norm=_norm(block.pre_feedforward_layernorm, conv),
            mlp_out_norm=_norm(block.post_feedforward_layernorm, conv),
        )
    # Llama naming: "post_attention_layernorm" is the norm *before* the MLP.
    return LayerSpec(index, layer_type, attention, mlp_spec, _norm(block.input_layernorm, conv),
                     _norm(block.post_attention_layernorm, conv))


def _norm(module: nn.Module, conv: ArchConventions) -> NormSpec:
    eps = getattr(module, "variance_epsilon", None)
    if eps is None:
        eps = module.eps
    return NormSpec(
        kind=conv.norm_kind,  # type: ignore[arg-type]
        weight=module.weight,
        eps=float(eps),
        weight_offset=conv.norm_offset,
        bias=getattr(module, "bias", None),
    )


def _rope(rotary: nn.Module, layer_type: str, config, conv: ArchConventions) -> RopeSpec:
    params = config.rope_parameters
    if layer_type in params:  # per-layer-type rope (Gemma3: local 10k, global 1M)
        params = params[layer_type]
        inv_freq = getattr(rotary, f"{layer_type}_inv_freq")
        scaling = getattr(rotary, f"{layer_type}_attention_scaling")
    else:
        inv_freq, scaling = rotary.inv_freq, rotary.attention_scaling
    return RopeSpec(
        theta=float(params["rope_theta"]),
        inv_freq=inv_freq,
        attention_scaling=float(scaling),
        interleaved=conv.rope_interleaved,
        rope_type=params.get("rope_type", "default"),
    )
