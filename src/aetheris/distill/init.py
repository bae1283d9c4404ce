"""Stage 1a: build the student from the teacher's weights (no training).

MambaInLlama's correspondence for each SSM block: V -> x, K -> B, Q -> C, O -> out_proj (z, dt,
A, D and the conv stay freshly initialised); the block's pre-norm is the attention's. MoE experts
come from the teacher MLP:

- `upcycle`: every expert a copy, so the MoE block equals the MLP exactly at init (top-1 weight
  is 1.0). No compute saved; 4x the expert parameters.
- `split` (MoEfication): the MLP's intermediate neurons partitioned into E equal groups by
  clustering their activations on calibration text; each group is an expert of 1/E width. The
  experts' outputs sum to the MLP's, each token runs 1/E of it; the router is fitted to predict
  which group is most active.

Gemma's sandwich norms (on the attention and MLP outputs) become the student's per-block
post-norms. What the student cannot copy (LayerNorm mean-centring, QK-norm and RoPE inside
replaced attention) is left to the alignment stage.

`init="random"` is the baseline: the same config and shapes (widths, layer map and expert width
from the teacher), but every weight, embeddings included, from the model's own random
initialisation; nothing is copied.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from aetheris.distill.layer_map import resolve_layer_map
from aetheris.model import AetherisConfig, AetherisForCausalLM
from aetheris.teacher.spec import LayerSpec, MLPSpec, TeacherSpec

EXPERT_STRATEGIES = ("upcycle", "split")
INIT_SOURCES = ("teacher", "random")


def student_config(
    spec: TeacherSpec,
    layout: str = "SM" * 12,
    layer_map: str | Sequence[int] = "uniform",
    experts: str = "upcycle",
    num_experts: int = 4,
    influence: Sequence[float] | None = None,
    init: str = "teacher",
    **overrides,
) -> AetherisConfig:
    """The student's config: widths from the teacher, the layer map and weight source recorded."""
    if experts not in EXPERT_STRATEGIES:
        raise ValueError(f"experts={experts!r}: expected one of {EXPERT_STRATEGIES}")
    if init not in INIT_SOURCES:
        raise ValueError(f"init={init!r}: expected one of {INIT_SOURCES}")
    attn = spec.layers[0].attention
    inter = spec.layers[0].mlp.intermediate_size
    if experts == "split" and inter % num_experts:
        raise ValueError(
            f"experts='split' needs the teacher's MLP width {inter} divisible by num_experts={num_experts}"
        )
    mapping = resolve_layer_map(layer_map, spec.num_layers, layout, influence)
    a_blocks = [i for i, c in enumerate(layout) if c == "A"]
    a_attn = [spec.layers[mapping[_slot(layout, i)]].attention for i in a_blocks]
    sliding_windows = [a.sliding_window for a in a_attn]
    args = dict(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        layout=layout,
        num_attention_heads=attn.num_heads,
        num_key_value_heads=attn.num_kv_heads,
        head_dim=attn.head_dim,
        d_state=attn.head_dim,
        num_experts=num_experts,
        moe_intermediate_size=inter if experts == "upcycle" else inter // num_experts,
        hidden_act=spec.layers[0].mlp.activation,
        rms_norm_eps=spec.final_norm.eps,
        embed_scale=spec.embed_scale,
        logit_scale=spec.logit_scale,
        final_logit_softcapping=spec.final_logit_softcap,
        rope_theta=attn.rope.theta if attn.rope is not None else 10000.0,
        qk_norm=attn.q_norm is not None,
        post_norm=spec.layers[0].attn_out_norm is not None,
        sliding_window=next((w for w in sliding_windows if w), None),
        attn_sliding=[w is not None for w in sliding_windows],
        attn_rope_theta=[a.rope.theta if a.rope is not None else None for a in a_attn],
        attn_scaling=a_attn[0].scaling if a_attn else None,
        tie_word_embeddings=spec.tied_embeddings,  # an untied teacher head is copied, not replaced
        distillation={
            "teacher_model_type": spec.model_type,
            "teacher_layers": spec.num_layers,
            "layer_map": mapping,
            "layer_map_strategy": layer_map if isinstance(layer_map, str) else "explicit",
            "experts": experts,
            "init": init,
        },
    )
    if spec.config is not None:
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            args.setdefault(key, getattr(spec.config, key, None))
    args.update(overrides)
    return AetherisConfig(**args)


def _slot(layout: str, block: int) -> int:
    """Block index -> its slot (k-th mixer or k-th MoE block)."""
    kinds = "SA" if layout[block] in "SA" else "M"
    return sum(c in kinds for c in layout[:block])


def teacher_layer(config: AetherisConfig, block: int) -> int:
    """The teacher layer whose weights block `block` of a student with this config starts from."""
    return config.distillation["layer_map"][_slot(config.layout, block)]


@torch.no_grad()
def init_student(
    spec: TeacherSpec,
    config: AetherisConfig,
    calibration: dict[int, torch.Tensor] | None = None,
    seed: int = 0,
) -> AetherisForCausalLM:
    """A student whose weights come from the teacher's, as `config.distillation` says.

    `calibration` (teacher layer -> MLP inputs (tokens, hidden)) is needed for `split`. With
    `config.distillation["init"] == "random"` nothing is copied: the model's own initialisation
    under `seed`, in the teacher's dtype.
    """
    torch.manual_seed(seed)
    student = AetherisForCausalLM(config).to(spec.dtype)
    init = config.distillation.get("init", "teacher")
    if init == "random":
        return student
    if init != "teacher":
        raise ValueError(f"init={init!r}: expected one of {INIT_SOURCES}")
    experts = config.distillation["experts"]
    m = student.model
    m.embed_tokens.weight.copy_(spec.embed_tokens)
    if not config.tie_word_embeddings:
        student.lm_head.weight.copy_(spec.lm_head)
    m.norm.weight.copy_(spec.final_norm.scale())
    for i, block in enumerate(m.layers):
        layer = spec.layers[teacher_layer(config, i)]
        if block.kind == "S":
            _init_ssm(block, layer)
        elif block.kind == "A":
            _init_attention(block, layer)
        else:
            norm = layer.attn_norm if layer.parallel else layer.mlp_norm
            block.norm.weight.copy_(norm.scale())
        if block.post_norm is not None:
            out_norm = layer.mlp_out_norm if block.kind == "M" else layer.attn_out_norm
            block.post_norm.weight.copy_(out_norm.scale())
        if block.kind == "M":
            if experts == "upcycle":
                for expert in block.mixer.experts:
                    _copy_mlp(expert, layer.mlp, torch.arange(layer.mlp.intermediate_size))
            else:
                if calibration is None or layer.index not in calibration:
                    raise ValueError(
                        f"experts='split' needs calibration inputs for teacher layer {layer.index}"
                    )
                groups, router = split_mlp(layer.mlp, calibration[layer.index], len(block.mixer.experts))
                for expert, neurons in zip(block.mixer.experts, groups):
                    _copy_mlp(expert, layer.mlp, neurons)
                block.mixer.router.weight.copy_(router)
    return student


def _init_ssm(block, layer: LayerSpec) -> None:
    attn, mixer = layer.attention, block.mixer
    if mixer.d_state != attn.head_dim:
        raise ValueError(
            f"SSM d_state={mixer.d_state} must equal the teacher head_dim={attn.head_dim} to take K and Q"
        )
    block.norm.weight.copy_(layer.attn_norm.scale())
    z, x, B, C, _ = mixer.in_proj.weight.split(mixer.sizes, dim=0)
    x.copy_(attn.v_weight)
    B.copy_(attn.k_weight)
    C.copy_(attn.q_weight)
    mixer.out_proj.weight.copy_(attn.o_weight)


def _init_attention(block, layer: LayerSpec) -> None:
    attn, mod = layer.attention, block.mixer
    block.norm.weight.copy_(layer.attn_norm.scale())
    for name in ("q", "k", "v", "o"):
        getattr(mod, f"{name}_proj").weight.copy_(getattr(attn, f"{name}_weight"))
    if mod.q_norm is not None:
        mod.q_norm.weight.copy_(attn.q_norm.scale())
        mod.k_norm.weight.copy_(attn.k_norm.scale())


def _copy_mlp(expert, mlp: MLPSpec, neurons: torch.Tensor) -> None:
    expert.gate_proj.weight.copy_(mlp.gate_weight[neurons])
    expert.up_proj.weight.copy_(mlp.up_weight[neurons])
    expert.down_proj.weight.copy_(mlp.down_weight[:, neurons])


def mlp_activations(mlp: MLPSpec, x: torch.Tensor) -> torch.Tensor:
    """Per-neuron activations act(gate x) * (up x): (tokens, intermediate)."""
    from transformers.activations import ACT2FN

    return ACT2FN[mlp.activation](x @ mlp.gate_weight.T) * (x @ mlp.up_weight.T)


def split_mlp(
    mlp: MLPSpec, x: torch.Tensor, n_experts: int, iters: int = 25, seed: int = 0
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """MoEfication: balanced k-means of the neurons' activation profiles on `x` (tokens, hidden).

    Returns the neuron indices of each expert (a partition into equal sizes) and a router
    weight (n_experts, hidden) fitted by ridge regression to each group's mean |activation|.
    """
    x = x.float()
    acts = mlp_activations(_float(mlp), x)  # (T, I)
    inter = acts.shape[1]
    size = inter // n_experts
    prof = torch.nn.functional.normalize(acts.abs().T, dim=1)  # one profile per neuron
    g = torch.Generator().manual_seed(seed)
    centroids = prof[torch.randperm(inter, generator=g)[:n_experts]]
    for _ in range(iters):
        assign = _balanced_assign(prof @ centroids.T, size)
        centroids = torch.stack([prof[assign == e].mean(0) for e in range(n_experts)])
        centroids = torch.nn.functional.normalize(centroids, dim=1)
    groups = [torch.nonzero(assign == e).flatten() for e in range(n_experts)]
    # Router: x -> how active each group is, least squares with a small ridge.
    target = torch.stack([acts[:, grp].abs().mean(1) for grp in groups], dim=1)  # (T, E)
    target = target - target.mean(0)
    gram = x.T @ x + 1e-3 * torch.eye(x.shape[1]) * x.pow(2).sum() / x.shape[0]
    router = torch.linalg.solve(gram, x.T @ target).T
    return groups, router.to(mlp.gate_weight.dtype)


def _balanced_assign(similarity: torch.Tensor, size: int) -> torch.Tensor:
    """Greedy: neurons by decreasing best similarity take their best expert that still has room."""
    n, k = similarity.shape
    assign = torch.full((n,), -1, dtype=torch.long)
    room = [size] * k
    order = torch.argsort(similarity.max(1).values, descending=True)
    prefs = torch.argsort(similarity, dim=1, descending=True)
    for i in order.tolist():
        for e in prefs[i].tolist():
            if room[e]:
                assign[i] = e
                room[e] -= 1
                break
    return assign


def _float(mlp: MLPSpec) -> MLPSpec:
    return MLPSpec(mlp.gate_weight.float(), mlp.up_weight.float(), mlp.down_weight.float(), mlp.activation)
