"""Stage 1a: the student built from a teacher's weights, for every supported architecture."""

import pytest
import torch
from tiny_teachers import TEACHER_TYPES, teacher_tensors, tiny_model, weight_rows

from aetheris.distill.calibration import influence_scores, mlp_inputs
from aetheris.distill.init import expert_errors, init_student, split_mlp, student_config
from aetheris.distill.layer_map import resolve_layer_map, uniform_map
from aetheris.model import AetherisForCausalLM
from aetheris.teacher import introspect

IDS = torch.randint(3, 256, (2, 24), generator=torch.Generator().manual_seed(0))
# A student that copies a teacher computes the same function with ops in another order (SDPA vs
# eager softmax, fused vs split projections): fp32 rounding over a few hundred ops per logit.
FP32_TOL = 1000 * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("arch", TEACHER_TYPES)
def test_upcycled_student_copies_attention_and_reproduces_the_mlp(arch):
    teacher = tiny_model(arch)
    spec = introspect(teacher)
    cfg = student_config(spec, layout="SM" * spec.num_layers, experts="upcycle")
    student = init_student(spec, cfg).eval()
    assert cfg.distillation["layer_map"] == list(range(spec.num_layers))
    for k, t in enumerate(cfg.distillation["layer_map"]):
        layer = spec.layers[t]
        ssm, moe = student.model.layers[2 * k], student.model.layers[2 * k + 1]
        z, x, B, C, dt = ssm.mixer.in_proj.weight.split(ssm.mixer.sizes, dim=0)
        assert torch.equal(x, layer.attention.v_weight) and torch.equal(B, layer.attention.k_weight)
        assert torch.equal(C, layer.attention.q_weight)
        assert torch.equal(ssm.mixer.out_proj.weight, layer.attention.o_weight)
        if layer.attn_norm is not None:  # OLMo 2 has none: the student block's norm is the identity
            assert torch.equal(ssm.norm.weight, layer.attn_norm.scale())
        h = torch.randn(3, 5, spec.hidden_size)
        y, _ = moe.mixer(h)
        # The top-1 weight is exactly 1, but each expert multiplies its own group of rows (other
        # kernel shapes than the MLP's), so equal to fp32 rounding: torch's default tolerance.
        torch.testing.assert_close(y, layer.mlp.apply(h))
    assert torch.equal(student.model.embed_tokens.weight, spec.embed_tokens)
    assert student.config.embed_scale == spec.embed_scale and student.config.logit_scale == spec.logit_scale
    out = student.generate(IDS[:, :5], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (2, 9)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "phi"])
def test_split_experts_partition_the_mlp_and_sum_to_it(arch):
    """Phi: non-gated GELU with biases; each expert keeps the whole output bias (one runs per token)."""
    teacher = tiny_model(arch)
    spec = introspect(teacher)
    cfg = student_config(spec, layout="SM" * spec.num_layers, experts="split")
    calib = mlp_inputs(teacher, IDS, cfg.distillation["layer_map"])
    student = init_student(spec, cfg, calibration=calib)
    for k, t in enumerate(cfg.distillation["layer_map"]):
        layer, moe = spec.layers[t], student.model.layers[2 * k + 1].mixer
        groups, _ = split_mlp(layer.mlp, calib[t], 4)
        neurons = torch.cat(groups)
        assert sorted(neurons.tolist()) == list(range(layer.mlp.intermediate_size))  # a partition
        assert {len(g) for g in groups} == {layer.mlp.intermediate_size // 4}
        h = torch.randn(7, spec.hidden_size)
        summed = sum(e(h) for e in moe.experts)
        if layer.mlp.down_bias is not None:
            summed = summed - 3 * layer.mlp.down_bias
        torch.testing.assert_close(summed, layer.mlp.apply(h), rtol=1e-5, atol=1e-5)
        assert moe.experts[0].up_proj.weight.shape[0] == layer.mlp.intermediate_size // 4
    assert student.active_parameters() < student.num_parameters()
    student.eval()(IDS)  # runs


def test_split_router_prefers_the_most_active_group():
    teacher = tiny_model("llama")
    spec = introspect(teacher)
    x = mlp_inputs(teacher, IDS, [0])[0]
    groups, router = split_mlp(spec.layers[0].mlp, x, 4)
    from aetheris.distill.init import mlp_activations

    acts = mlp_activations(spec.layers[0].mlp, x).abs()
    most_active = torch.stack([acts[:, g].mean(1) for g in groups], 1).argmax(1)
    agree = ((x @ router.T).argmax(1) == most_active).float().mean()
    assert agree > 0.4  # chance is 0.25


def test_layer_maps():
    assert uniform_map(36, 12) == [0, 3, 6, 10, 13, 16, 19, 22, 25, 29, 32, 35]
    assert resolve_layer_map([0, 2], 4, "SMSM") == [0, 2]
    assert resolve_layer_map("block-influence", 4, "SMSM", influence=[0.1, 0.9, 0.2, 0.8]) == [1, 3]
    with pytest.raises(ValueError, match="needs 2"):
        resolve_layer_map([0], 4, "SMSM")
    with pytest.raises(ValueError, match="outside"):
        resolve_layer_map([0, 9], 4, "SMSM")
    with pytest.raises(ValueError, match=r"expected one of \('uniform'"):
        resolve_layer_map("random", 4, "SMSM")
    teacher = tiny_model("gemma3")
    scores = influence_scores(teacher, IDS)
    assert len(scores) == 4 and all(0 <= s <= 2 for s in scores)
    spec = introspect(teacher)
    cfg = student_config(spec, layout="SMSM", layer_map="block-influence", influence=scores)
    assert cfg.distillation["layer_map"] == sorted(sorted(range(4), key=lambda i: -scores[i])[:2])


def test_hybrid_keeps_teacher_attention_exactly():
    teacher = tiny_model("qwen3")
    spec = introspect(teacher)
    cfg = student_config(spec, layout="AM" + "SM", experts="upcycle")
    student = init_student(spec, cfg)
    a = student.model.layers[0].mixer
    assert torch.equal(a.q_proj.weight, spec.layers[0].attention.q_weight)
    assert torch.equal(a.q_norm.weight, spec.layers[0].attention.q_norm.scale())
    # the student's first block reproduces the teacher's first attention (same norm, rope, GQA)
    h = teacher.model.embed_tokens(IDS)
    x = student.model.layers[0].norm(h)
    pos = torch.arange(IDS.shape[1])[None].expand(2, -1)
    cos_sin = teacher.model.rotary_emb(h, pos)
    causal = torch.full((IDS.shape[1], IDS.shape[1]), float("-inf")).triu(1)[None, None]
    ref = teacher.model.layers[0].self_attn(teacher.model.layers[0].input_layernorm(h), cos_sin, causal)[0]
    torch.testing.assert_close(a(x, pos), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", TEACHER_TYPES)
def test_post_norms_follow_the_teacher_and_an_upcycled_block_is_its_mlp_half(arch):
    """Gemma's sandwich norms and OLMo 2's post-norms become block post-norms; other teachers get
    none. With them the upcycled MoE block equals the teacher's whole residual MLP step, norms included."""
    teacher = tiny_model(arch)
    spec = introspect(teacher)
    cfg = student_config(spec, layout="SM" * spec.num_layers, experts="upcycle")
    student = init_student(spec, cfg).eval()
    sandwich = spec.layers[0].attn_out_norm is not None
    assert cfg.post_norm == sandwich == (arch in ("gemma3", "gemma2", "olmo2"))
    assert cfg.pre_norm == (arch != "olmo2")
    for k, layer in enumerate(spec.layers):
        ssm, moe = student.model.layers[2 * k], student.model.layers[2 * k + 1]
        assert (ssm.post_norm is None) == (moe.post_norm is None) == (not sandwich)
        if not sandwich or layer.parallel:
            continue
        assert torch.equal(ssm.post_norm.weight, layer.attn_out_norm.scale())
        h = torch.randn(2, 5, spec.hidden_size)
        t = teacher.model.layers[k]
        pre = getattr(t, "pre_feedforward_layernorm", torch.nn.Identity())  # OLMo 2: none
        expected = h + t.post_feedforward_layernorm(t.mlp(pre(h)))
        with torch.no_grad():
            got, _ = moe(h)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", TEACHER_TYPES)
def test_teacher_shaped_student_reproduces_the_teacher(arch, tmp_path):
    """Layout "AM" per teacher layer with upcycled experts keeps every teacher weight and convention
    (norm type and bias, pre/post/sandwich norms, parallel pairs, biases, QK-norm scope, partial or
    interleaved RoPE per layer, attention scaling, sliding windows, soft caps, multipliers): its
    logits are the teacher's."""
    teacher = tiny_model(arch)
    spec = introspect(teacher)
    student = init_student(spec, student_config(spec, layout="AM" * spec.num_layers, experts="upcycle")).eval()
    with torch.no_grad():
        expected = teacher(IDS).logits
        torch.testing.assert_close(student(IDS).logits, expected, rtol=FP32_TOL, atol=FP32_TOL * expected.abs().max())
    assert student.config.tie_word_embeddings == spec.tied_embeddings  # Llama's head is its own here
    student.save_pretrained(tmp_path)
    reloaded = AetherisForCausalLM.from_pretrained(tmp_path).eval()
    # safetensors stores the bytes: every weight comes back exactly; the logits are then the same
    # ops on the same shapes, compared to fp32 rounding since BLAS may vary with memory alignment.
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), student.state_dict().values()))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(IDS).logits, student(IDS).logits)


def test_bad_init_requests_are_named():
    spec = introspect(tiny_model("llama"))
    with pytest.raises(ValueError, match="experts='moefy'"):
        student_config(spec, layout="SMSM", experts="moefy")
    cfg = student_config(spec, layout="SMSM", experts="split")
    with pytest.raises(ValueError, match="calibration"):
        init_student(spec, cfg)
    with pytest.raises(ValueError, match=r"init='zeros': expected one of \('teacher', 'random'\)"):
        student_config(spec, layout="SMSM", init="zeros")


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3", "cohere2", "gpt_neox"])
def test_random_init_has_the_teacher_init_shapes_but_no_teacher_weight(arch):
    # Teacher seed 1, student seed 0: a tiny random teacher made under the student's own seed
    # would draw the same numbers as the student's initialisation.
    teacher = tiny_model(arch, seed=1)
    spec = introspect(teacher)
    layout = "SM" * spec.num_layers
    cfg_t = student_config(spec, layout=layout, experts="split")
    cfg_r = student_config(spec, layout=layout, experts="split", init="random")
    assert cfg_r.distillation.pop("init") == "random" and cfg_t.distillation.pop("init") == "teacher"
    assert cfg_r.to_dict() == cfg_t.to_dict()  # the same model but for where its weights come from
    cfg_r.distillation["init"], cfg_t.distillation["init"] = "random", "teacher"
    calib = mlp_inputs(teacher, IDS, cfg_t.distillation["layer_map"])
    by_teacher = init_student(spec, cfg_t, calibration=calib)
    random = init_student(spec, cfg_r)  # split needs no calibration when nothing is copied
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}
    assert shapes(random) == shapes(by_teacher)
    assert random.num_parameters() == by_teacher.num_parameters()
    assert random.active_parameters() == by_teacher.active_parameters()
    width = spec.layers[0].mlp.intermediate_size // 4  # split's expert width, though nothing is split
    assert random.model.layers[1].mixer.experts[0].up_proj.weight.shape[0] == width

    teacher_rows = weight_rows(teacher_tensors(teacher))
    assert weight_rows(by_teacher.parameters()) & teacher_rows  # the check sees what teacher init copies
    assert not weight_rows(random.parameters()) & teacher_rows
    assert not torch.equal(random.model.embed_tokens.weight, spec.embed_tokens)
    std = float(random.model.embed_tokens.weight.detach().std())  # the model's own init: N(0, initializer_range)
    assert abs(std - cfg_r.initializer_range) < 0.2 * cfg_r.initializer_range
    again = init_student(spec, cfg_r)
    assert all(torch.equal(a, b) for a, b in zip(random.parameters(), again.parameters()))  # seeded

    # it runs, generates and trains
    out = random.generate(IDS[:, :5], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (2, 9)
    random.train()
    opt = torch.optim.AdamW(random.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = random(IDS, labels=IDS).loss
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[-1] < losses[0]


def test_random_init_with_upcycle_keeps_the_full_expert_width():
    spec = introspect(tiny_model("llama"))
    student = init_student(spec, student_config(spec, layout="SMSM", experts="upcycle", init="random"))
    experts = student.model.layers[1].mixer.experts
    assert experts[0].gate_proj.weight.shape[0] == spec.layers[0].mlp.intermediate_size
    assert not torch.equal(experts[0].gate_proj.weight, experts[1].gate_proj.weight)  # not copies either


@pytest.fixture(scope="module")
def tokenizer():
    from eval_tiny import tiny_tokenizer

    from aetheris.data.sources import embedded_corpus

    return tiny_tokenizer([e.text for e in embedded_corpus()][:200], vocab_size=300)


def run_recipe(arch, tokenizer, tmp_path, layout="SM", experts="split") -> AetherisForCausalLM:
    """init -> align -> kd on a tiny teacher of `arch`, at the smallest budget that runs them."""
    from aetheris.distill.config import parse_config
    from aetheris.distill.pipeline import run_stages

    # seed 1: a random teacher made under the student's seed (0) would hold the student's own init
    tiny_model(arch, seed=1, vocab_size=len(tokenizer)).save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    budget = {"steps": 1, "batch_size": 1, "lr": 1e-3, "checkpoint_every": 1, "log_every": 1}
    cfg = parse_config({
        "teacher": {"name": str(tmp_path / "teacher")},
        "student": {"layout": layout, "experts": experts, "overrides": {"ssm_chunk_size": 8}},
        "data": {"train": ["embedded"], "eval": ["embedded"], "seq_len": 16},
        "align": {"calibration_samples": 2},
        "kd": {"chunk_size": 16},
        "train": {"align": budget, "kd": budget, "sft": budget},
        "output_dir": str(tmp_path / "run"),
    })  # fmt: skip
    for stage in ("init", "align", "kd"):
        run_stages(cfg, stage)
    return AetherisForCausalLM.from_pretrained(tmp_path / "run" / "kd").eval()


@pytest.mark.parametrize("arch", TEACHER_TYPES)
def test_init_align_kd_run_and_the_student_generates(arch, tokenizer, tmp_path):
    student = run_recipe(arch, tokenizer, tmp_path)
    assert student.config.distillation["teacher_model_type"] == introspect(tiny_model(arch)).model_type
    out = student.generate(IDS[:1, :4] % len(tokenizer), max_new_tokens=3, min_new_tokens=3, do_sample=False,
                           pad_token_id=0)  # fmt: skip
    assert out.shape == (1, 7)


@pytest.mark.parametrize("arch", ["phi", "granite"])
def test_kd_compares_the_logits_the_teacher_and_student_really_produce(arch, tokenizer, tmp_path):
    """Phi's head bias and Granite's logits_scaling sit outside the hidden-state @ head product that
    KD chunks: a teacher-shaped student starts at KL 0 only if both sides apply them."""
    import json

    run_recipe(arch, tokenizer, tmp_path, layout="AM" * 2, experts="upcycle")
    note = json.loads((tmp_path / "run" / "kd" / "stage.json").read_text())
    assert note["held_out_kl_before"] < 1e-4, note


def test_expert_errors_are_what_each_split_expert_alone_misses():
    teacher = tiny_model("llama")
    spec = introspect(teacher)
    cfg = student_config(spec, layout="SM" * spec.num_layers, experts="split")
    calib = mlp_inputs(teacher, IDS, cfg.distillation["layer_map"])
    student = init_student(spec, cfg, calibration=calib)
    mlp, moe = spec.layers[0].mlp, student.model.layers[1].mixer
    groups, _ = split_mlp(mlp, calib[0], 4)
    h = torch.randn(9, spec.hidden_size)
    full = mlp.apply(h)
    errors = expert_errors(mlp, h, groups)
    for e, expert in enumerate(moe.experts):
        want = (full - expert(h)).pow(2).sum(-1) / full.pow(2).sum(-1)
        torch.testing.assert_close(errors[:, e], want, rtol=1e-4, atol=1e-6)
    assert expert_errors(mlp, h, [torch.arange(mlp.intermediate_size)]).abs().max() < 1e-10  # the whole MLP


def first_mlp_tokens(seed: int) -> tuple:
    """A tiny Llama's first MLP and its inputs on two disjoint draws of random tokens
    (calibration, held-out)."""
    teacher = tiny_model("llama")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = mlp_inputs(teacher, torch.randint(3, 256, (8, 32), generator=g), [0])[0]
        held = mlp_inputs(teacher, torch.randint(3, 256, (8, 32), generator=g), [0])[0]
    return introspect(teacher).layers[0].mlp, x, held


def test_output_fitted_router_picks_experts_nearer_the_mlp():
    """student.split_router: output. Fitted to how far each group alone lands from the MLP, its
    top-1 choice misses less of the MLP's output than the activation-fitted router's, on the
    calibration tokens and on held-out ones, and both beat a random choice."""
    mlp, x, held = first_mlp_tokens(seed=1)
    missed = {}
    for target in ("activation", "output"):
        groups, router = split_mlp(mlp, x, 4, router_target=target)
        for name, tokens in (("calib", x), ("held", held)):
            errors = expert_errors(mlp, tokens, groups)
            chosen = errors.gather(1, (tokens @ router.T).argmax(1, keepdim=True))
            missed[target, name] = float(chosen.mean())
            missed["random", name] = float(errors.mean())
    for name in ("calib", "held"):
        assert missed["output", name] < missed["activation", name] < missed["random", name], missed
    with pytest.raises(ValueError, match="router_target='best'"):
        split_mlp(mlp, x, 4, router_target="best")


def test_token_experts_serve_equal_shares_of_tokens_better():
    """student.split_partition: tokens. Each expert is the neurons that carry its own quarter of
    the tokens' output, so with every expert serving a quarter of the tokens (what load balancing
    asks for) the best assignment misses less of the MLP than the neuron partition's, on held-out
    tokens too; experts stay quarter width, and some neurons are in more than one expert."""
    from aetheris.distill.init import balanced_assign

    mlp, x, held = first_mlp_tokens(seed=2)
    size = mlp.intermediate_size // 4
    balanced = {}
    for partition in ("neurons", "tokens"):
        groups, router = split_mlp(mlp, x, 4, router_target="output", partition=partition)
        assert [grp.numel() for grp in groups] == [size] * 4
        assert all(int(grp.max()) < mlp.intermediate_size for grp in groups)
        for name, tokens in (("calib", x), ("held", held)):
            errors = expert_errors(mlp, tokens, groups)
            share = balanced_assign(-errors, -(-tokens.shape[0] // 4))
            balanced[partition, name] = float(errors.detach().gather(1, share[:, None]).mean())
        if partition == "neurons":
            assert torch.cat(groups).unique().numel() == mlp.intermediate_size  # a partition
        else:
            assert torch.cat(groups).unique().numel() < mlp.intermediate_size  # shared neurons
    for name in ("calib", "held"):
        assert balanced["tokens", name] < balanced["neurons", name], balanced
    with pytest.raises(ValueError, match="partition='experts'"):
        split_mlp(mlp, x, 4, partition="experts")
