"""Tiny random teachers of every supported architecture, built from configs (shared by tests)."""

import torch
from transformers import AutoModelForCausalLM, Cohere2Config, Gemma3TextConfig, LlamaConfig, Qwen3Config

SMALL = dict(vocab_size=256, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=128, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _config(arch: str):
    if arch == "llama":
        return LlamaConfig(num_hidden_layers=2, tie_word_embeddings=False, **SMALL)
    if arch == "qwen3":
        return Qwen3Config(num_hidden_layers=2, head_dim=16, tie_word_embeddings=True, **SMALL)
    if arch == "gemma3":
        # query_pre_attn_scalar != head_dim and a soft cap: conventions that must show in the spec
        return Gemma3TextConfig(
            num_hidden_layers=4, head_dim=16, sliding_window=4, query_pre_attn_scalar=24,
            layer_types=["sliding_attention", "full_attention"] * 2, final_logit_softcapping=3.0, **SMALL,
        )
    if arch == "cohere2":
        return Cohere2Config(
            num_hidden_layers=3, sliding_window=4, logit_scale=0.5,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"], **SMALL,
        )
    raise KeyError(arch)


ARCHS = ["llama", "qwen3", "gemma3", "cohere2"]


def tiny_model(arch: str, seed: int = 0, **overrides):
    """`overrides` set config fields (e.g. vocab_size to fit a tokenizer)."""
    torch.manual_seed(seed)
    config = _config(arch)
    for key, value in overrides.items():
        setattr(config, key, value)
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # move norms off their init values so that offsets matter
        for name, p in model.named_parameters():
            if "norm" in name:
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
    norms = [spec.final_norm] + [n for layer in spec.layers for n in (layer.attn_norm, layer.mlp_norm) if n]
    return [*teacher.parameters(), spec.embed_tokens, *(n.scale() for n in norms)]
