"""Read a loaded HF decoder-only causal LM into a `TeacherSpec` (see spec.py for the conventions).

Nothing here is keyed by architecture name except the two facts that live only in a model's
code (`FUSED_QKV_LAYOUT`, `ROPE_ONLY_ON`). Everything else is derived from the model itself:

- where things are: the `ModuleList` of decoder layers, the child of each layer that owns the
  q/k/v (or fused qkv) projections, the child that owns the MLP projections, norms by role name;
- what they compute: each norm is *probed* (RMSNorm or LayerNorm, weight or 1 + weight, bias),
  each MLP is probed against its spec, the rotary module's cos pattern says whether RoPE pairs
  halves or neighbours and over how many dimensions;
- the numbers: the modules' own `scaling`, `sliding_window`, `embed_scale`, and the config's
  multipliers and soft caps.

What cannot be mapped raises `UnsupportedArchitectureError` naming the module and the convention.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from aetheris.errors import UserError
from aetheris.teacher.spec import AttentionSpec, LayerSpec, MLPSpec, NormSpec, RopeSpec, TeacherSpec

# Row layout of a single fused q/k/v projection, where a model's code (not its config) decides it.
# Default for `qkv_proj`/`Wqkv`: [q | k | v] stacked. GPT-NeoX's `query_key_value`: per head [q_h k_h v_h].
FUSED_QKV_LAYOUT: dict[str, str] = {"gpt_neox": "per_head"}
# Layer types that apply RoPE, where others run without positions (Cohere2's global layers).
ROPE_ONLY_ON: dict[str, tuple[str, ...]] = {"cohere2": ("sliding_attention",)}

ATTENTION_NAMES = ("self_attn", "attention", "attn", "self_attention")
MLP_NAMES = ("mlp", "feed_forward", "ffn")
OUT_PROJ_NAMES = ("o_proj", "dense", "out_proj", "c_proj")
FUSED_QKV_NAMES = ("qkv_proj", "Wqkv", "query_key_value")
UP_NAMES = ("up_proj", "fc1", "c_fc", "dense_h_to_4h")
DOWN_NAMES = ("down_proj", "fc2", "c_proj", "dense_4h_to_h")
FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f")
QK_NORM_NAMES = (("q_norm", "k_norm"), ("q_layernorm", "k_layernorm"))
POSITION_EMBEDDING_NAMES = ("wpe", "embed_positions", "position_embeddings")


class UnsupportedArchitectureError(UserError, ValueError):
    """A teacher the student cannot be built from: the message names the module and the convention."""


@dataclass
class LayerModules:
    """One decoder layer's modules and their names inside the model (for hooks on the teacher)."""

    name: str
    block: nn.Module
    attention: nn.Module
    mlp: nn.Module
    attention_name: str  # e.g. "model.layers.0.self_attn"
    mlp_name: str


class _Unsupported:
    """Builds errors that carry the teacher's identity."""

    def __init__(self, model: nn.Module) -> None:
        self.who = f"{getattr(model.config, 'model_type', '?')!r} ({type(model).__name__})"

    def __call__(self, where: str, convention: str, detail: str = "") -> UnsupportedArchitectureError:
        tail = f": {detail}" if detail else ""
        return UnsupportedArchitectureError(f"teacher {self.who}, module {where!r}: {convention} is not supported{tail}")


def teacher_layers(model: nn.Module) -> list[LayerModules]:
    """The decoder layers of `model` with their attention and MLP modules, found by role."""
    fail = _Unsupported(model)
    if getattr(model.config, "is_encoder_decoder", False):
        raise fail(type(model).__name__, "an encoder-decoder model", "the student distils decoder-only causal LMs")
    base_name = getattr(model, "base_model_prefix", "model")
    base = getattr(model, base_name, None)
    n = getattr(model.config, "num_hidden_layers", None)
    lists = [(k, c) for k, c in (base.named_children() if base is not None else ()) if isinstance(c, nn.ModuleList)]
    found = [(k, c) for k, c in lists if len(c) == n]
    if not found:
        raise fail(base_name, "a model without a list of decoder layers",
                   f"expected an nn.ModuleList of num_hidden_layers={n} layers in {base_name!r}")
    list_name, blocks = found[0]
    out = []
    for i, block in enumerate(blocks):
        name = f"{base_name}.{list_name}.{i}"
        attn = _child(block, ATTENTION_NAMES, lambda m: _has_any(m, ("q_proj", *FUSED_QKV_NAMES)))
        if attn is None:
            raise fail(name, "a layer without softmax attention",
                       f"found children {[k for k, _ in block.named_children()]}, none with q/k/v projections")
        mlp = _child(block, MLP_NAMES, lambda m: _has_any(m, (*DOWN_NAMES, "gate_up_proj")))
        if mlp is None:
            raise fail(name, "a layer without a dense MLP",
                       f"expected one of {MLP_NAMES} with down/fc2 projections (mixture-of-experts teachers are not read)")
        out.append(LayerModules(name, block, attn[1], mlp[1], f"{name}.{attn[0]}", f"{name}.{mlp[0]}"))
    return out


def introspect(model: nn.Module) -> TeacherSpec:
    """Describe `model` (any decoder-only *ForCausalLM of transformers' dense families) as plain tensors."""
    config = model.config
    fail = _Unsupported(model)
    model_type = getattr(config, "model_type", type(model).__name__)
    base_name = getattr(model, "base_model_prefix", "model")
    base = getattr(model, base_name, model)
    for name in POSITION_EMBEDDING_NAMES:
        if isinstance(getattr(base, name, None), nn.Module):
            raise fail(f"{base_name}.{name}", "learned absolute position embeddings",
                       "the student's attention knows rotary embeddings or none")
    if getattr(config, "alibi", False):
        raise fail(base_name, "ALiBi position biases")
    layers_found = teacher_layers(model)
    embed_module = model.get_input_embeddings()
    head = model.get_output_embeddings()
    if head is None:
        raise fail(type(model).__name__, "a model without an output head")
    embed = embed_module.weight
    final = _child(base, FINAL_NORM_NAMES, lambda m: hasattr(m, "weight"))
    if final is None:
        raise fail(base_name, "a model without a final norm", f"expected one of {FINAL_NORM_NAMES}")
    layer_types = list(getattr(config, "layer_types", None) or [None] * len(layers_found))
    rotary = getattr(base, "rotary_emb", None)
    rope_only_on = ROPE_ONLY_ON.get(model_type)
    layers = []
    for i, found in enumerate(layers_found):
        attn = _attention(found, config, rotary, layer_types[i], rope_only_on, model_type, fail)
        layer_type = layer_types[i] or ("sliding_attention" if attn.sliding_window else "full_attention")
        mlp = _mlp(found, config, embed.shape[1], fail)
        layers.append(_layer(i, found, layer_type, attn, mlp, config, fail))
    logit_scale = float(getattr(config, "logit_scale", None) or 1.0)
    logit_scale /= float(getattr(config, "logits_scaling", None) or 1.0)  # Granite divides
    embed_scale = float(getattr(embed_module, "scalar_embed_scale", getattr(embed_module, "embed_scale", 1.0)))
    embed_scale *= float(getattr(config, "embedding_multiplier", None) or 1.0)  # Granite
    return TeacherSpec(
        model_type=model_type,
        architecture=type(model).__name__,
        hidden_size=embed.shape[1],
        vocab_size=embed.shape[0],
        embed_tokens=embed,
        embed_scale=embed_scale,
        final_norm=_norm(final[1], f"{base_name}.{final[0]}", fail),
        lm_head=head.weight,
        lm_head_bias=head.bias,
        tied_embeddings=head.weight.data_ptr() == embed.data_ptr(),
        logit_scale=logit_scale,
        final_logit_softcap=getattr(config, "final_logit_softcapping", None),
        layers=layers,
        dtype=embed.dtype,
        config=config,
    )


def _layer(index: int, found: LayerModules, layer_type: str, attention: AttentionSpec, mlp: MLPSpec,
           config, fail: _Unsupported) -> LayerSpec:  # fmt: skip
    """Norm roles from their names. `post_attention_layernorm` is Llama's pre-MLP norm, unless the
    layer also has a `pre_feedforward_layernorm` (Gemma's sandwich) or no pre-attention norm (OLMo 2's
    post-norm layout): then it normalises the attention output."""
    block, name = found.block, found.name
    norms = {k: m for k, m in block.named_children() if k.endswith(("norm", "layernorm", "layer_norm"))}
    roles = {"attn_norm": "input_layernorm", "mlp_norm": "pre_feedforward_layernorm",
             "mlp_out_norm": "post_feedforward_layernorm"}  # fmt: skip
    if "input_layernorm" in norms and "pre_feedforward_layernorm" not in norms:
        roles["mlp_norm"] = "post_attention_layernorm"
    else:
        roles["attn_out_norm"] = "post_attention_layernorm"
    unknown = sorted(set(norms) - set(roles.values()))
    if unknown:
        raise fail(f"{name}.{unknown[0]}", "a norm in an unknown position", f"known: {sorted(roles.values())}")
    spec = {role: _norm(norms[k], f"{name}.{k}", fail) for role, k in roles.items() if norms.get(k) is not None}
    if set(spec) == {"attn_norm"}:  # one pre-norm read by both branches (Cohere, Phi, StableLM's parallel variant)
        parallel = True
        spec["mlp_norm"] = spec["attn_norm"]
    else:
        parallel = bool(getattr(config, "use_parallel_residual", False))
    if parallel and ("attn_out_norm" in spec or "mlp_out_norm" in spec):
        raise fail(name, "a parallel block with output norms")
    if (spec.get("attn_norm") is None) != (spec.get("mlp_norm") is None):
        raise fail(name, "a pre-norm on only one of attention and MLP")
    return LayerSpec(index, layer_type, attention, mlp, spec.get("attn_norm"), spec.get("mlp_norm"),
                     spec.get("attn_out_norm"), spec.get("mlp_out_norm"), parallel=parallel,
                     residual_scale=float(getattr(config, "residual_multiplier", None) or 1.0))  # fmt: skip


def _attention(found: LayerModules, config, rotary, layer_type, rope_only_on, model_type,
               fail: _Unsupported) -> AttentionSpec:  # fmt: skip
    attn, where = found.attention, found.attention_name
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(attn, "head_dim", None) or getattr(attn, "head_size", None)
    head_dim = head_dim or getattr(config, "head_dim", None) or config.hidden_size // heads
    q, k, v, qb, kb, vb = _qkv(attn, where, heads, kv_heads, head_dim, model_type, fail)
    out = _child(attn, OUT_PROJ_NAMES, lambda m: isinstance(m, nn.Linear))
    if out is None:
        raise fail(where, "an attention without an output projection", f"expected one of {OUT_PROJ_NAMES}")
    q_norm = k_norm = None
    scope = "head"
    for qn, kn in QK_NORM_NAMES:
        if getattr(attn, qn, None) is not None:
            q_norm = _norm(getattr(attn, qn), f"{where}.{qn}", fail)
            k_norm = _norm(getattr(attn, kn), f"{where}.{kn}", fail)
            scope = "head" if q_norm.weight.numel() == head_dim else "full"
            if scope == "full" and q_norm.weight.numel() != heads * head_dim:
                raise fail(f"{where}.{qn}", f"a QK-norm over {q_norm.weight.numel()} features",
                           f"expected head_dim={head_dim} or heads*head_dim={heads * head_dim}")
    if hasattr(attn, "sliding_window"):
        window = attn.sliding_window
    else:  # Mistral, StarCoder2, Phi-3: the config's window (if any) masks every layer
        window = getattr(config, "sliding_window", None) if layer_type in (None, "sliding_attention") else None
    with_rope = rope_only_on is None or layer_type in rope_only_on
    softcap = getattr(attn, "attn_logit_softcapping", getattr(config, "attn_logit_softcapping", None))
    return AttentionSpec(
        q_weight=q, k_weight=k, v_weight=v, o_weight=out[1].weight,
        q_bias=qb, k_bias=kb, v_bias=vb, o_bias=out[1].bias,
        num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
        scaling=float(getattr(attn, "scaling", head_dim**-0.5)),
        q_norm=q_norm, k_norm=k_norm, qk_norm_scope=scope,
        rope=_rope(rotary, layer_type, config, head_dim, where, fail) if with_rope else None,
        sliding_window=window,
        logit_softcap=softcap,
    )  # fmt: skip


def _qkv(attn: nn.Module, where: str, heads: int, kv_heads: int, head_dim: int, model_type: str,
         fail: _Unsupported):  # fmt: skip
    """q, k, v weights and biases: separate projections, or views of one fused projection."""
    if hasattr(attn, "q_proj"):
        mods = attn.q_proj, attn.k_proj, attn.v_proj
        return (*(m.weight for m in mods), *(m.bias for m in mods))
    name, fused = _child(attn, FUSED_QKV_NAMES, lambda m: isinstance(m, nn.Linear))
    layout = FUSED_QKV_LAYOUT.get(model_type, "concat" if name != "query_key_value" else None)
    if layout is None:
        raise fail(f"{where}.{name}", "a fused query_key_value projection of unknown row layout",
                   f"known for model types {sorted(FUSED_QKV_LAYOUT)}")
    sizes = [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim]

    def split(t: torch.Tensor | None):
        if t is None:
            return None, None, None
        if layout == "concat":
            return t.split(sizes, dim=0)
        # per head [q_h, k_h, v_h] rows (multi-head only): a copy, since the rows are strided
        per_head = t.reshape(heads, 3, head_dim, *t.shape[1:])
        return tuple(per_head[:, j].reshape(heads * head_dim, *t.shape[1:]) for j in range(3))

    if layout == "per_head" and kv_heads != heads:
        raise fail(f"{where}.{name}", "a per-head fused qkv projection with grouped key/value heads")
    return (*split(fused.weight), *split(fused.bias))


def _mlp(found: LayerModules, config, hidden: int, fail: _Unsupported) -> MLPSpec:
    mlp, where = found.mlp, found.mlp_name
    down = _child(mlp, DOWN_NAMES, lambda m: isinstance(m, nn.Linear))
    act = getattr(config, "hidden_activation", None) or config.hidden_act
    if down is None:
        raise fail(where, "an MLP without a down projection", f"expected one of {DOWN_NAMES}")
    if hasattr(mlp, "gate_up_proj"):  # Phi-3: [gate | up] rows
        w, b = mlp.gate_up_proj.weight, mlp.gate_up_proj.bias
        gate, up = w.chunk(2, dim=0)
        gb, ub = b.chunk(2, dim=0) if b is not None else (None, None)
    else:
        up_mod = _child(mlp, UP_NAMES, lambda m: isinstance(m, nn.Linear))
        gate_mod = getattr(mlp, "gate_proj", None)
        if up_mod is None:
            raise fail(where, "an MLP of unknown projections", f"children {[k for k, _ in mlp.named_children()]}")
        up, ub = up_mod[1].weight, up_mod[1].bias
        gate, gb = (None, None) if gate_mod is None else (gate_mod.weight, gate_mod.bias)
    spec = MLPSpec(gate, up, down[1].weight, act, gb, ub, down[1].bias)
    _check(mlp, spec.apply, hidden, where, f"the MLP as {'gated' if spec.gated else 'non-gated'} {act!r}", fail)
    return spec


def _norm(module: nn.Module, where: str, fail: _Unsupported) -> NormSpec:
    """RMSNorm or LayerNorm, `weight` or `1 + weight`, with or without bias: whichever the module computes."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1:
        shape = None if weight is None else tuple(weight.shape)
        raise fail(where, "a norm without one weight per feature", f"weight shape {shape}")
    eps = next((getattr(module, a) for a in ("variance_epsilon", "eps", "epsilon") if hasattr(module, a)), None)
    if eps is None:
        raise fail(where, "a norm without an epsilon attribute")
    bias = getattr(module, "bias", None)
    candidates = [NormSpec(kind, weight, float(eps), offset, bias)
                  for kind in ("rmsnorm", "layernorm") for offset in (0.0, 1.0)]  # fmt: skip
    errors = [_error(module, c.apply, weight.numel(), weight) for c in candidates]
    best = min(range(len(errors)), key=errors.__getitem__)
    if errors[best] > _tolerance(weight.dtype):
        raise fail(where, f"the norm {type(module).__name__}",
                   "it computes neither RMSNorm nor LayerNorm with weight or 1 + weight")
    return candidates[best]


def _rope(rotary: nn.Module | None, layer_type, config, head_dim: int, where: str, fail: _Unsupported) -> RopeSpec:
    if rotary is None:
        raise fail(where, "an attention without a model-level rotary embedding (rotary_emb)")
    params = getattr(config, "rope_parameters", None) or {}
    kwargs = {}
    if layer_type in params:  # per-layer-type rope (Gemma3: local 10k, global 1M)
        params = params[layer_type]
        inv_freq = getattr(rotary, f"{layer_type}_inv_freq")
        scaling = getattr(rotary, f"{layer_type}_attention_scaling")
        kwargs["layer_type"] = layer_type
    else:
        inv_freq, scaling = rotary.inv_freq, rotary.attention_scaling
    if "rope_theta" not in params:
        raise fail(where, "a rotary embedding without rope_theta in the config's rope_parameters")
    return RopeSpec(
        theta=float(params["rope_theta"]),
        inv_freq=inv_freq,
        attention_scaling=float(scaling),
        interleaved=_rope_interleaved(rotary, inv_freq, float(scaling), kwargs, where, fail),
        rope_type=params.get("rope_type", "default"),
    )


@torch.no_grad()
def _rope_interleaved(rotary: nn.Module, inv_freq: torch.Tensor, scaling: float, kwargs: dict, where: str,
                      fail: _Unsupported) -> bool:  # fmt: skip
    """From the cos table the rotary module emits: angles repeated per neighbour pair (Cohere, GPT-J)
    or as two halves (Llama). Where both read the same (one frequency), the halves."""
    if "layer_type" in kwargs and "layer_type" not in inspect.signature(rotary.forward).parameters:
        kwargs = {}
    x = torch.zeros(1, 1, device=inv_freq.device)
    cos = rotary(x, torch.tensor([[3]], device=inv_freq.device), **kwargs)[0].float().flatten()
    expected = (3 * inv_freq.float()).cos() * scaling
    if torch.allclose(cos, torch.cat([expected, expected]), atol=1e-3):
        return False
    if torch.allclose(cos, expected.repeat_interleave(2), atol=1e-3):
        return True
    raise fail(where, "a rotary embedding whose cos table is neither halves nor interleaved pairs")


def _child(module: nn.Module, names: tuple[str, ...], ok) -> tuple[str, nn.Module] | None:
    """The first child named one of `names` for which `ok(child)` holds, as (name, child)."""
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Module) and ok(child):
            return name, child
    return None


def _has_any(module: nn.Module, names: tuple[str, ...]) -> bool:
    return any(isinstance(getattr(module, n, None), nn.Module) for n in names)


def _probe(dim: int, like: torch.Tensor) -> torch.Tensor:
    """Fixed inputs with a non-zero mean (so that LayerNorm and RMSNorm differ)."""
    g = torch.Generator().manual_seed(0)
    return (torch.randn(4, dim, generator=g) * 2 + 1).to(device=like.device, dtype=like.dtype)


def _tolerance(dtype: torch.dtype) -> float:
    """Relative error allowed between a module and its spec: rounding of the module's dtype."""
    return max(1e-4, 8 * torch.finfo(dtype).eps)


@torch.no_grad()
def _error(module: nn.Module, reference, dim: int, like: torch.Tensor) -> float:
    x = _probe(dim, like)
    got, want = module(x).float(), reference(x).float()
    return float((got - want).norm() / want.norm().clamp(min=1e-12))


def _check(module: nn.Module, reference, dim: int, where: str, convention: str, fail: _Unsupported) -> None:
    like = next(module.parameters())
    if _error(module, reference, dim, like) > _tolerance(like.dtype):
        raise fail(where, convention, "the module's output differs from that reading of its weights")
