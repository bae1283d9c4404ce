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

The teacher's conventions become config fields, so that `A`/`M` blocks copy it exactly: norm type
(RMSNorm/LayerNorm, bias), pre-, post- (Gemma's sandwich, OLMo 2) and parallel blocks (Cohere,
Phi, GPT-NeoX), biases, QK-norm scope, partial or interleaved RoPE, soft caps and multipliers.
What an SSM block cannot copy (q/k/v/o biases, QK-norm and RoPE inside replaced attention) is
left to the alignment stage. With `split`, every expert keeps the MLP's whole output bias: one
expert runs per token, and it must add what the MLP adds.

`init="random"` is the baseline: the same config and shapes (widths, layer map and expert width
from the teacher), but every weight, embeddings included, from the model's own random
initialisation; nothing is copied.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from aetheris.distill.layer_map import resolve_layer_map
from aetheris.model import AetherisConfig, AetherisForCausalLM
from aetheris.teacher.spec import LayerSpec, MLPSpec, NormSpec, TeacherSpec

EXPERT_STRATEGIES = ("upcycle", "split")
SPLIT_ROUTERS = ("activation", "output")  # what a split expert's router is fitted to (split_mlp)
SPLIT_PARTITIONS = ("neurons", "tokens")  # how split_mlp chooses each expert's neurons
INIT_SOURCES = ("teacher", "random")


def student_config(
    spec: TeacherSpec,
    layout: str = "SM" * 12,
    layer_map: str | Sequence[int] = "uniform",
    experts: str = "upcycle",
    num_experts: int = 4,
    influence: Sequence[float] | None = None,
    init: str = "teacher",
    split_router: str = "activation",
    split_partition: str = "neurons",
    **overrides,
) -> AetherisConfig:
    """The student's config: widths from the teacher, the layer map and weight source recorded
    (with `split` experts also what their routers are fitted to and how their neurons were
    chosen: `split_mlp`'s router_target and partition)."""
    if experts not in EXPERT_STRATEGIES:
        raise ValueError(f"experts={experts!r}: expected one of {EXPERT_STRATEGIES}")
    if split_router not in SPLIT_ROUTERS:
        raise ValueError(f"split_router={split_router!r}: expected one of {SPLIT_ROUTERS}")
    if split_partition not in SPLIT_PARTITIONS:
        raise ValueError(f"split_partition={split_partition!r}: expected one of {SPLIT_PARTITIONS}")
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
    for block, a in zip(a_blocks, a_attn):
        if a.rope is not None and a.rope.rope_type != "default":
            raise ValueError(
                f"layout block {block} ('A'): its teacher layer uses rope_type={a.rope.rope_type!r}; the "
                "student's attention computes default RoPE only (use an 'S' block there)"
            )
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
        **teacher_conventions(spec),
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
            **({"split_router": split_router, "split_partition": split_partition} if experts == "split" else {}),
        },
    )
    if spec.config is not None:
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            args.setdefault(key, getattr(spec.config, key, None))
    args.update(overrides)
    return AetherisConfig(**args)


def teacher_conventions(spec: TeacherSpec) -> dict:
    """The AetherisConfig fields that make A and M blocks compute what the teacher's layers compute.

    They are per model in the student, so every teacher layer must agree on them."""
    merged: dict = {}
    for layer in spec.layers:
        conv = _layer_conventions(layer)
        differ = sorted(k for k in conv if merged.get(k, conv[k]) != conv[k])
        if differ:
            raise ValueError(
                f"teacher layer {layer.index} differs from the layers before it in {differ}: the student "
                "keeps one value of each per model"
            )
        merged.update(conv)
    final = spec.final_norm
    return {
        **merged,
        "norm_type": final.kind,
        "norm_bias": final.bias is not None,
        "lm_head_bias": spec.lm_head_bias is not None,
    }


def _layer_conventions(layer: LayerSpec) -> dict:
    a, m = layer.attention, layer.mlp
    rope = {} if a.rope is None else {"rotary_dim": a.rope.rotary_dim, "rope_interleaved": a.rope.interleaved}
    return {
        **rope,
        "pre_norm": layer.attn_norm is not None,
        "post_norm": layer.attn_out_norm is not None,
        "parallel_residual": layer.parallel,
        "residual_multiplier": layer.residual_scale,
        "attention_bias": a.q_bias is not None,
        "attention_out_bias": a.o_bias is not None,
        "qk_norm_scope": a.qk_norm_scope,
        "attn_logit_softcapping": a.logit_softcap,
        "mlp_gated": m.gated,
        "mlp_bias": m.up_bias is not None,
    }


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

    `calibration` (teacher layer -> MLP inputs (tokens, hidden)) is needed for `split`, whose
    routers are fitted to `config.distillation["split_router"]`'s target (`split_mlp`). With
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
    if spec.lm_head_bias is not None:
        student.lm_head.bias.copy_(spec.lm_head_bias)
    _copy_norm(m.norm, spec.final_norm)
    for i, block in enumerate(m.layers):
        layer = spec.layers[teacher_layer(config, i)]
        _copy_norm(block.norm, layer.mlp_norm if block.kind == "M" else layer.attn_norm)
        if block.post_norm is not None:
            _copy_norm(block.post_norm, layer.mlp_out_norm if block.kind == "M" else layer.attn_out_norm)
        if block.kind == "S":
            _init_ssm(block, layer)
        elif block.kind == "A":
            _init_attention(block, layer)
        elif experts == "upcycle":
            for expert in block.mixer.experts:
                _copy_mlp(expert, layer.mlp, torch.arange(layer.mlp.intermediate_size))
        else:
            if calibration is None or layer.index not in calibration:
                raise ValueError(f"experts='split' needs calibration inputs for teacher layer {layer.index}")
            groups, router = split_mlp(layer.mlp, calibration[layer.index], len(block.mixer.experts),
                                       router_target=config.distillation.get("split_router", "activation"),
                                       partition=config.distillation.get("split_partition", "neurons"))  # fmt: skip
            for expert, neurons in zip(block.mixer.experts, groups):
                _copy_mlp(expert, layer.mlp, neurons)
            block.mixer.router.weight.copy_(router)
    return student


def _copy_norm(module: torch.nn.Module, norm: NormSpec | None) -> None:
    """The teacher norm's applied scale (Gemma's 1 + weight) and bias; none for an identity slot."""
    if norm is None:
        return
    module.weight.copy_(norm.scale())
    if norm.bias is not None:
        module.bias.copy_(norm.bias)


def _init_ssm(block, layer: LayerSpec) -> None:
    attn, mixer = layer.attention, block.mixer
    if mixer.d_state != attn.head_dim:
        raise ValueError(
            f"SSM d_state={mixer.d_state} must equal the teacher head_dim={attn.head_dim} to take K and Q"
        )
    z, x, B, C, _ = mixer.in_proj.weight.split(mixer.sizes, dim=0)
    x.copy_(attn.v_weight)
    B.copy_(attn.k_weight)
    C.copy_(attn.q_weight)
    mixer.out_proj.weight.copy_(attn.o_weight)


def _init_attention(block, layer: LayerSpec) -> None:
    attn, mod = layer.attention, block.mixer
    for name in ("q", "k", "v", "o"):
        proj = getattr(mod, f"{name}_proj")
        proj.weight.copy_(getattr(attn, f"{name}_weight"))
        if getattr(attn, f"{name}_bias") is not None:
            proj.bias.copy_(getattr(attn, f"{name}_bias"))
    if mod.q_norm is not None:
        _copy_norm(mod.q_norm, attn.q_norm)
        _copy_norm(mod.k_norm, attn.k_norm)


def _copy_mlp(expert, mlp: MLPSpec, neurons: torch.Tensor) -> None:
    if mlp.gated:
        expert.gate_proj.weight.copy_(mlp.gate_weight[neurons])
    expert.up_proj.weight.copy_(mlp.up_weight[neurons])
    expert.down_proj.weight.copy_(mlp.down_weight[:, neurons])
    if mlp.up_bias is not None:
        if mlp.gated:
            expert.gate_proj.bias.copy_(mlp.gate_bias[neurons])
        expert.up_proj.bias.copy_(mlp.up_bias[neurons])
        expert.down_proj.bias.copy_(mlp.down_bias)  # whole: the one expert a token runs adds it


def mlp_activations(mlp: MLPSpec, x: torch.Tensor) -> torch.Tensor:
    """Per-neuron activations act(gate x) * (up x), or act(up x): (tokens, intermediate)."""
    return mlp.activations(x)


def split_mlp(
    mlp: MLPSpec,
    x: torch.Tensor,
    n_experts: int,
    iters: int = 25,
    seed: int = 0,
    router_target: str = "activation",
    partition: str = "neurons",
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Quarter-width experts from one MLP, chosen on `x` (tokens, hidden), and their router.

    `partition`: `neurons` is MoEfication, a balanced k-means of the neurons' activation profiles
    (the experts partition the MLP and sum to it); `tokens` (`token_experts`) makes each expert the
    neurons that carry the output of its own quarter of the tokens, so experts may share neurons.
    Returns each expert's neuron indices and a router weight (n_experts, hidden) fitted by ridge
    regression to a score per token and expert: `activation`, the group's mean |activation|
    (MoEfication's choice); `output`, minus how far that group alone lands from the whole MLP's
    output (`expert_errors`), which is what top-1 routing is judged on.
    """
    if router_target not in SPLIT_ROUTERS:
        raise ValueError(f"router_target={router_target!r}: expected one of {SPLIT_ROUTERS}")
    if partition not in SPLIT_PARTITIONS:
        raise ValueError(f"partition={partition!r}: expected one of {SPLIT_PARTITIONS}")
    x = x.float()
    fmlp = _float(mlp)
    acts = fmlp.activations(x)  # (T, I)
    groups = _neuron_kmeans(acts, n_experts, iters, seed)
    if partition == "tokens":
        groups = token_experts(acts, fmlp.down_weight, groups)
    if router_target == "activation":
        target = torch.stack([acts[:, grp].abs().mean(1) for grp in groups], dim=1)  # (T, E)
        target = target - target.mean(0)
    else:
        # Not centred: an expert that is best for most tokens must keep its head start, and the
        # router has no bias to hold it (centring cost 2x in held-out error on gemma3-270m, §10c).
        target = -_errors(acts, fmlp.down_weight, groups)
    # Router: x -> the score, least squares with a small ridge.
    gram = x.T @ x + 1e-3 * torch.eye(x.shape[1]) * x.pow(2).sum() / x.shape[0]
    router = torch.linalg.solve(gram, x.T @ target).T
    return groups, router.to(mlp.up_weight.dtype)


def _neuron_kmeans(acts: torch.Tensor, n_experts: int, iters: int, seed: int) -> list[torch.Tensor]:
    """MoEfication: balanced k-means of the neurons' normalised |activation| profiles over tokens."""
    inter = acts.shape[1]
    prof = torch.nn.functional.normalize(acts.abs().T, dim=1)  # one profile per neuron
    g = torch.Generator().manual_seed(seed)
    centroids = prof[torch.randperm(inter, generator=g)[:n_experts]]
    for _ in range(iters):
        assign = balanced_assign(prof @ centroids.T, inter // n_experts)
        centroids = torch.stack([prof[assign == e].mean(0) for e in range(n_experts)])
        centroids = torch.nn.functional.normalize(centroids, dim=1)
    return [torch.nonzero(assign == e).flatten() for e in range(n_experts)]


def token_experts(
    acts: torch.Tensor, down: torch.Tensor, groups: list[torch.Tensor], rounds: int = 8
) -> list[torch.Tensor]:
    """Experts that are each the best one for an equal share of the tokens.

    k-means with experts as centroids, starting from `groups`: each token joins the expert that
    reproduces its MLP output best, under equal shares (`balanced_assign`); each expert then
    takes the neurons with the most output energy (activation² · ‖down column‖², cross terms
    ignored) over its tokens, as many as it had. Neurons every token needs end up in every
    expert. A neuron partition cannot do that: on gemma3-270m one of its groups was the best
    expert for 99% of tokens (BENCHMARKS §10c), so balanced routing lost 2-4x more output. The
    rounds' groups with the lowest mean error under equal shares are returned.
    """
    tokens, size = acts.shape[0], groups[0].numel()
    energy = acts.pow(2) * down.pow(2).sum(0)  # (T, I)
    full = acts @ down.T  # the same every round
    best, best_error = groups, float("inf")
    for _ in range(rounds):
        errors = _errors(acts, down, groups, full)
        assign = balanced_assign(-errors, -(-tokens // len(groups)))
        error = float(errors.gather(1, assign[:, None]).mean())
        if error < best_error:
            best, best_error = groups, error
        groups = [torch.topk(energy[assign == e].sum(0), size).indices.sort().values for e in range(len(groups))]
    return best


def expert_errors(mlp: MLPSpec, x: torch.Tensor, groups: list[torch.Tensor]) -> torch.Tensor:
    """(tokens, experts): ‖MLP(x) − expert_e(x)‖² / ‖MLP(x)‖² per token, expert e being the MLP
    restricted to the neurons `groups[e]` (the output bias cancels: every expert keeps it whole)."""
    return _errors(mlp.activations(x), mlp.down_weight, groups)


def _errors(acts: torch.Tensor, down: torch.Tensor, groups: list[torch.Tensor],
            full: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """`expert_errors` from the activations; `full` (acts @ down.T) when the caller already has it."""
    full = acts @ down.T if full is None else full
    scale = full.pow(2).sum(-1).clamp_min(1e-12)
    errs = [(full - acts[:, grp] @ down[:, grp].T).pow(2).sum(-1) / scale for grp in groups]
    return torch.stack(errs, dim=1)


def balanced_assign(similarity: torch.Tensor, size: int) -> torch.Tensor:
    """Greedy: items (neurons or tokens) by decreasing best similarity take their best expert that
    still has room for `size`."""
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
    f = lambda t: None if t is None else t.float()  # noqa: E731
    return MLPSpec(f(mlp.gate_weight), f(mlp.up_weight), f(mlp.down_weight), mlp.activation,
                   f(mlp.gate_bias), f(mlp.up_bias), f(mlp.down_bias))  # fmt: skip
