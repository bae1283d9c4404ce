"""A `TeacherSpec` as rich tables, for `aetheris teacher info`."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table

from aetheris.teacher.spec import NormSpec, TeacherSpec


def _norm(norm: NormSpec | None) -> str:
    if norm is None:
        return "-"
    weight = "w" if norm.weight_offset == 0 else f"({norm.weight_offset:g}+w)"
    bias = "+b" if norm.bias is not None else ""
    return f"{norm.kind} {weight}{bias} eps={norm.eps:g}"


def spec_tables(spec: TeacherSpec) -> Group:
    """Model-level facts, then one row per layer."""
    model = Table(title=f"{spec.architecture} ({spec.model_type})", show_header=False)
    facts = {
        "parameters": f"{spec.num_parameters() / 1e6:.1f}M",
        "dtype": str(spec.dtype).removeprefix("torch."),
        "layers": str(spec.num_layers),
        "hidden size": str(spec.hidden_size),
        "vocab size": str(spec.vocab_size),
        "embedding scale": f"{spec.embed_scale:g}",
        "lm_head": ("tied to embeddings" if spec.tied_embeddings else "separate")
        + (" + bias" if spec.lm_head_bias is not None else ""),
        "residual multiplier": f"{spec.layers[0].residual_scale:g}" if spec.layers else "-",
        "logit scale": f"{spec.logit_scale:g}",
        "final logit soft-cap": "-" if spec.final_logit_softcap is None else f"{spec.final_logit_softcap:g}",
        "final norm": _norm(spec.final_norm),
        "rope theta per layer type": ", ".join(
            f"{k}: {'none' if v is None else f'{v:g}'}" for k, v in spec.rope_thetas().items()
        ),
    }
    for key, value in facts.items():
        model.add_row(key, value)

    layers = Table(title="layers")
    for column in ("#", "type", "window", "heads q/kv", "head_dim", "scaling", "qk-norm", "rope",
                   "mlp", "norms", "block"):
        layers.add_column(column)
    for layer in spec.layers:
        a, m = layer.attention, layer.mlp
        rope = "none" if a.rope is None else f"{a.rope.theta:g}{' interleaved' if a.rope.interleaved else ''}"
        if a.rope is not None and a.rope.rotary_dim != a.head_dim:
            rope += f" on {a.rope.rotary_dim}/{a.head_dim} dims"
        norms = [_norm(layer.attn_norm or layer.attn_out_norm)]
        if layer.attn_out_norm is not None:
            norms.append("sandwich" if layer.attn_norm is not None else "post-norm only")
        mlp = f"{'gated ' if m.gated else ''}{m.activation} x{m.intermediate_size}"
        biases = [n for n, b in (("qkv", a.q_bias), ("o", a.o_bias), ("mlp", m.up_bias)) if b is not None]
        layers.add_row(
            str(layer.index),
            layer.layer_type,
            str(a.sliding_window or "-"),
            f"{a.num_heads}/{a.num_kv_heads}",
            str(a.head_dim),
            f"{a.scaling:.4g}",
            "no" if a.q_norm is None else f"per {a.qk_norm_scope}",
            rope,
            mlp + (f" (bias: {', '.join(biases)})" if biases else ""),
            ", ".join(norms),
            "parallel" if layer.parallel else "sequential",
        )
    return Group(model, layers)


def print_spec(spec: TeacherSpec, console: Console | None = None) -> None:
    (console or Console()).print(spec_tables(spec))
