"""Tiny random teachers of every supported architecture, built from configs (shared by tests).

Each config turns on the conventions its family is known for, so that a spec that misses one
fails the reproduction tests: biases, fused projections, partial or interleaved RoPE, parallel
blocks, LayerNorm with or without bias, sandwich and post norms, QK-norm per head or full width,
sliding windows, soft caps, and embedding/residual/attention/logit multipliers.
"""

import torch
from transformers import AutoConfig, AutoModelForCausalLM

SMALL = dict(vocab_size=256, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=128, bos_token_id=1, eos_token_id=2, pad_token_id=0)

# arch -> (transformers model_type, config fields beyond SMALL, num_hidden_layers 2 unless given)
CONFIGS = {
    "llama": ("llama", dict(tie_word_embeddings=False)),
    "qwen3": ("qwen3", dict(head_dim=16, tie_word_embeddings=True)),
    # query_pre_attn_scalar != head_dim and a soft cap: conventions that must show in the spec
    "gemma3": ("gemma3_text", dict(
        num_hidden_layers=4, head_dim=16, sliding_window=4, query_pre_attn_scalar=24,
        layer_types=["sliding_attention", "full_attention"] * 2, final_logit_softcapping=3.0)),
    "cohere2": ("cohere2", dict(
        num_hidden_layers=3, sliding_window=4, logit_scale=0.5,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"])),
    "qwen2": ("qwen2", dict()),  # q/k/v biases, none on o
    "gemma2": ("gemma2", dict(head_dim=16, sliding_window=4, query_pre_attn_scalar=24,
                              attn_logit_softcapping=5.0, final_logit_softcapping=3.0)),
    "phi": ("phi", dict()),  # parallel, LayerNorm + bias, partial rotary 0.5, gelu_new fc1/fc2, head bias
    "stablelm": ("stablelm", dict(use_qkv_bias=True)),  # LayerNorm + bias, partial rotary 0.25
    "starcoder2": ("starcoder2", dict(sliding_window=4)),  # every bias, GELU c_fc/c_proj
    # fused per-head query_key_value, parallel with two LayerNorms, partial rotary; multi-head only
    "gpt_neox": ("gpt_neox", dict(num_key_value_heads=None)),
    "cohere": ("cohere", dict(logit_scale=0.5)),  # parallel, LayerNorm without bias, interleaved RoPE
    "mistral": ("mistral", dict(sliding_window=4)),
    "phi3": ("phi3", dict()),  # fused qkv_proj and gate_up_proj
    "olmo2": ("olmo2", dict()),  # post-norms only, QK-norm over the full width
    "granite": ("granite", dict(embedding_multiplier=3.0, residual_multiplier=0.5,
                                attention_multiplier=0.3, logits_scaling=2.0)),
}  # fmt: skip
TEACHER_TYPES = list(CONFIGS)  # every supported family: the introspection and init suites run over these
# The four that the other suites (align, compress, pipeline) run over: their cost stays as it was.
ARCHS = ["llama", "qwen3", "gemma3", "cohere2"]


def _config(arch: str):
    model_type, extra = CONFIGS[arch]
    fields = {"num_hidden_layers": 2, **SMALL, **extra}
    return AutoConfig.for_model(model_type, **{k: v for k, v in fields.items() if v is not None})


def tiny_model(arch: str, seed: int = 0, **overrides):
    """`overrides` set config fields (e.g. vocab_size to fit a tokenizer)."""
    torch.manual_seed(seed)
    config = _config(arch)
    for key, value in overrides.items():
        setattr(config, key, value)
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # move norms and biases off their init values so that they matter
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.2 * torch.randn_like(p))
    return model


def weight_rows(tensors) -> set[bytes]:
    """Every non-constant row and column of 2-D tensors and every non-constant 1-D tensor, as bytes:
    a weight copied whole, or a split expert's rows/columns, shows up as a shared entry."""
    out = set()
    for t in tensors:
        t = t.detach().float()
        for v in [t] if t.dim() == 1 else [*t, *t.T] if t.dim() == 2 else []:
            if v.numel() > 1 and not torch.all(v == v[0]):
                out.add(v.contiguous().numpy().tobytes())
    return out


def teacher_tensors(teacher) -> list[torch.Tensor]:
    """The teacher's parameters and the norm scales a student may copy (Gemma's are 1 + weight)."""
    from aetheris.teacher import introspect

    spec = introspect(teacher)
    norms = [spec.final_norm] + [n for layer in spec.layers for n in (layer.attn_norm, layer.mlp_norm,
                                                                       layer.attn_out_norm, layer.mlp_out_norm) if n]
    return [*teacher.parameters(), spec.embed_tokens, *(n.scale() for n in norms)]
