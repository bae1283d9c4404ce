"""The recipe's first three stages on the real gemma3-270m (262k vocabulary), through the public API."""

import functools
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import aetheris.distill.pipeline as pipeline
from aetheris.distill.config import parse_config
from aetheris.distill.init import mlp_activations
from aetheris.distill.pipeline import run_stages
from aetheris.teacher import EMBEDDED_TEACHERS, introspect, load_teacher


@pytest.mark.slow
def test_real_gemma3_270m_init_align_kd(tmp_path, monkeypatch):
    if not EMBEDDED_TEACHERS["gemma3-270m"].installed:
        pytest.skip(EMBEDDED_TEACHERS["gemma3-270m"].install + " not run")
    # Each run_stages call starts a new Run and would load the teacher again (~10 s each from the
    # safetensors cache): load it once. The stages still hand the student on through their folders.
    cached_load = functools.cache(load_teacher)
    monkeypatch.setattr(pipeline, "load_teacher", cached_load)
    align = {"steps": 3, "batch_size": 4, "lr": 3e-3, "log_every": 1}
    kd = {"steps": 2, "batch_size": 1, "lr": 5e-4, "log_every": 1}
    cfg = parse_config({
        "teacher": {"name": "gemma3-270m"},
        "student": {"layout": "SMSM", "experts": "split", "overrides": {"ssm_chunk_size": 16}},
        "data": {"train": ["embedded"], "eval": ["embedded"], "seq_len": 16},
        "align": {"calibration_samples": 4},
        "kd": {"temperature": 2.0, "alpha": 0.1, "top_k_cache": True, "top_k": 16, "chunk_size": 16},
        "train": {"align": align, "kd": kd, "sft": kd},
        "output_dir": str(tmp_path),
    })  # fmt: skip

    # init: the student's weights are the mapped teacher slices
    run_stages(cfg, "init")
    spec = introspect(cached_load("gemma3-270m", dtype="float32").model)
    init = AutoModelForCausalLM.from_pretrained(tmp_path / "init", dtype=torch.float32)
    mapping = init.config.distillation["layer_map"]
    assert mapping == [0, 17] and init.config.vocab_size == 262_144
    assert torch.equal(init.model.embed_tokens.weight, spec.embed_tokens)
    ssm, moe = init.model.layers[0], init.model.layers[1]
    layer = spec.layers[mapping[0]]
    z, x, B, C, dt = ssm.mixer.in_proj.weight.split(ssm.mixer.sizes, dim=0)
    assert torch.equal(x, layer.attention.v_weight) and torch.equal(B, layer.attention.k_weight)
    assert torch.equal(C, layer.attention.q_weight)
    assert torch.equal(ssm.mixer.out_proj.weight, layer.attention.o_weight)
    assert torch.equal(ssm.norm.weight, layer.attn_norm.scale())
    # split experts: a partition of the teacher MLP's neurons, so the experts sum to the MLP
    mlp = spec.layers[mapping[0]].mlp
    h = torch.randn(5, spec.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        summed = sum(e(h) for e in moe.mixer.experts)
        torch.testing.assert_close(summed, mlp_activations(mlp, h) @ mlp.down_weight.T, rtol=1e-4, atol=1e-4)
    assert {e.gate_proj.weight.shape[0] for e in moe.mixer.experts} == {mlp.intermediate_size // 4}

    # align: every SSM block's loss goes down, and the trained weights moved; MoE blocks (aligned
    # too) never end worse than they started
    run_stages(cfg, "align")
    report = json.loads((tmp_path / "align" / "stage.json").read_text())["layers"]
    assert [(r["block"], r["kind"]) for r in report] == [(0, "S"), (1, "M"), (2, "S"), (3, "M")]
    for r in report:
        assert math.isfinite(r["loss_after"]) and r["loss_after"] <= r["loss_before"], r
        assert r["kind"] == "M" or r["loss_after"] < r["loss_before"], r
    aligned = AutoModelForCausalLM.from_pretrained(tmp_path / "align", dtype=torch.float32)
    assert not torch.equal(aligned.model.layers[0].mixer.in_proj.weight, ssm.mixer.in_proj.weight)

    # kd on the top-k cache: finite losses, the weights move, held-out KL (online teacher) stays sane.
    # Two steps on 32 tokens are too few to promise a lower held-out KL (BENCHMARKS.md §6 measures that).
    final = run_stages(cfg, "kd")
    manifest = json.loads((tmp_path / "topk-cache" / "manifest.json").read_text())
    assert manifest["k"] == 16 and manifest["rows"] == 2 and manifest["seq_len"] == 16
    metrics = [
        json.loads(line) for line in (tmp_path / "runs" / "kd" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["step"] for m in metrics] == [1, 2] and all(math.isfinite(m["loss"]) for m in metrics)
    note = json.loads((tmp_path / "kd" / "stage.json").read_text())
    print(f"kd: held-out KL {note['held_out_kl_before']:.4f} -> {note['held_out_kl_after']:.4f}; "
          f"losses {[round(m['loss'], 3) for m in metrics]}")  # fmt: skip
    assert math.isfinite(note["held_out_kl_before"]) and math.isfinite(note["held_out_kl_after"])
    assert note["held_out_kl_after"] < 2 * note["held_out_kl_before"]
    kd_student = AutoModelForCausalLM.from_pretrained(tmp_path / "kd", dtype=torch.float32)
    assert not torch.equal(kd_student.model.layers[1].mixer.router.weight, aligned.model.layers[1].mixer.router.weight)

    # the final folder is a student transformers loads and generates with, its tokenizer beside it
    student = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    ids = tok("Habari ya asubuhi", return_tensors="pt").input_ids
    out = student.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 4) and torch.equal(out[:, : ids.shape[1]], ids)
    assert isinstance(tok.decode(out[0]), str)


@pytest.mark.slow
def test_real_gemma3_270m_teacher_shaped_student_reproduces_the_teacher():
    """Layout "AM" x 18 with upcycled experts keeps every teacher weight, sandwich norms included:
    its next-token distributions must be the teacher's. (Before post-norms existed, the SSM
    student's logits were ~9x the teacher's scale.)"""
    if not EMBEDDED_TEACHERS["gemma3-270m"].installed:
        pytest.skip(EMBEDDED_TEACHERS["gemma3-270m"].install + " not run")
    from aetheris.distill.init import init_student, student_config

    teacher = load_teacher("gemma3-270m")
    spec = introspect(teacher.model)
    text = "The quick brown fox jumps over the lazy dog. Habari ya asubuhi, rafiki yangu. 今天天气很好。"
    ids = teacher.tokenizer(text, return_tensors="pt").input_ids
    student = init_student(spec, student_config(spec, layout="AM" * spec.num_layers, experts="upcycle")).eval()
    assert student.config.post_norm
    with torch.no_grad():
        t = torch.log_softmax(teacher.model(ids).logits.float(), -1)
        s = torch.log_softmax(student(ids).logits.float(), -1)
    kl = (t.exp() * (t - s)).sum(-1)
    assert float(kl.mean()) < 1e-3, kl
    assert (t.argmax(-1) == s.argmax(-1)).float().mean() > 0.9
