"""Where a hybrid keeps attention: the per-layer probe, the placement choices and their config."""

import json

import pytest
import torch
from eval_tiny import save_embedded_teacher
from tiny_teachers import tiny_model

from aetheris.distill.attention_probe import PROBE_FILE, probe_attention, replaced_attention, ssm_block
from aetheris.distill.config import ConfigError, TrainConfig, parse_config
from aetheris.distill.init import init_student, student_config
from aetheris.distill.layer_map import place_attention
from aetheris.distill.pipeline import run_stages
from aetheris.teacher import introspect

FP32_TOL = 1000 * torch.finfo(torch.float32).eps
ALIGN = TrainConfig(steps=8, batch_size=2, lr=1e-2, checkpoint_every=0, log_every=4)


def rows(n, t=24, seed=0):
    ids = torch.randint(3, 256, (n, t), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def held_out(n=2, seed=1):
    r = rows(n, seed=seed)
    return [{k: v[i] for k, v in r.items()} for i in range(n)]


def probe(teacher, out, seed=0):
    spec = introspect(teacher)
    layers = list(range(spec.num_layers))
    cfg = ALIGN.model_copy(update={"seed": seed})
    return probe_attention(teacher, spec, layers, rows(4), held_out(), cfg, out, key={"seed": seed})


def four_layer_llama():
    return tiny_model("llama", num_hidden_layers=4)


def test_probe_scores_every_layer_the_same_way_under_a_seed(tmp_path):
    teacher = four_layer_llama()
    first = probe(teacher, tmp_path / "a")
    again = probe(teacher, tmp_path / "b")
    assert [r.teacher_layer for r in first] == [0, 1, 2, 3]
    assert all(r.held_out_kl > 0 and r.align_loss_after < r.align_loss_before for r in first)
    # same seed, same shapes, same machine: the same scores (to fp32 rounding)
    torch.testing.assert_close([r.held_out_kl for r in again], [r.held_out_kl for r in first], rtol=1e-5, atol=0)
    table = json.loads((tmp_path / "a" / PROBE_FILE).read_text())
    assert [r["teacher_layer"] for r in table["layers"]] == [0, 1, 2, 3]
    assert sorted(table["ranking"]) == [0, 1, 2, 3]
    assert not list((tmp_path / "a" / "runs" / "probe").glob("*/checkpoints"))  # metrics stay, optimizer state goes
    # A rerun with the same key reads the table instead of probing (a killed probe resumes so)
    table["layers"][1]["held_out_kl"] = 123.0
    (tmp_path / "a" / PROBE_FILE).write_text(json.dumps(table))
    assert probe(teacher, tmp_path / "a")[1].held_out_kl == 123.0
    assert probe(teacher, tmp_path / "a", seed=1)[1].held_out_kl != 123.0  # another key: probed again
    # each layer is probed on its own: probing only some of them gives the same scores
    spec = introspect(teacher)
    some = probe_attention(teacher, spec, [3, 1], rows(4), held_out(), ALIGN, tmp_path / "c", key={})
    torch.testing.assert_close([r.held_out_kl for r in some], [first[3].held_out_kl, first[1].held_out_kl],
                               rtol=1e-5, atol=0)  # fmt: skip


# Layer 2 is made the one that matters by shrinking what the others' attention writes into the
# stream. (Scaling layer 2 up instead makes the layers before it matter too: it amplifies their
# errors, and behind a post-norm, as in Gemma, a scaled o_proj does nothing at all.)
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_a_layer_made_important_is_ranked_first(arch, tmp_path):
    extra = {"layer_types": ["full_attention"] * 4} if arch == "qwen3" else {}
    teacher = tiny_model(arch, num_hidden_layers=4, **extra)
    with torch.no_grad():
        for i in (0, 1, 3):
            teacher.model.layers[i].self_attn.o_proj.weight.mul_(0.1)
    scores = [r.held_out_kl for r in probe(teacher, tmp_path)]
    others = [v for i, v in enumerate(scores) if i != 2]
    assert scores[2] > 2 * max(others), scores  # measured: about 3x on llama and qwen3


@pytest.mark.parametrize("arch", ["llama", "gemma3"])  # gemma3: sandwich norms, sliding windows, soft cap
def test_the_probed_model_is_the_student_with_one_layer_replaced(arch):
    """The teacher with layer t's attention hooked is the upcycled all-attention student with an S
    block (the same weights) at t: the probe measures the student it says it measures."""
    teacher = tiny_model(arch, num_hidden_layers=4)  # tiny gemma3 has 4 layers already, 2 of them sliding
    spec = introspect(teacher)
    block = ssm_block(spec, 1).eval()
    layout = "AMSMAMAM"
    student = init_student(spec, student_config(spec, layout=layout, experts="upcycle")).eval()
    student.model.layers[2].load_state_dict(block.state_dict())
    ids = rows(2)["input_ids"]
    with torch.no_grad():
        expected = student(ids).logits
        with replaced_attention(teacher, 1, block, torch.ones_like(ids)):
            got = teacher(ids).logits
        plain = teacher(ids).logits  # the hook is gone again
    torch.testing.assert_close(got, expected, rtol=FP32_TOL, atol=FP32_TOL * expected.abs().max())
    assert (plain - got).abs().max() > 1e-3


def test_placement_choices_give_the_expected_layouts():
    full = "SM" * 18
    mapping = list(range(18))
    assert place_attention(full, mapping, "uniform", 0.5) == "AMSM" * 9  # MambaInLlama's 50%
    quarter = place_attention(full, mapping, "uniform", 0.25)  # round(4.5) = 4 of 18, as bench_hybrid
    assert [k for k, c in enumerate(quarter[::2]) if c == "A"] == [0, 4, 9, 13]
    assert place_attention(full, mapping, "uniform", 0.0) == full
    assert place_attention(full, mapping, "uniform", 1.0) == "AM" * 18
    scores = {t: float(t % 5) for t in range(18)}  # 4, 9, 14 score highest, then 3, 8, 13
    probed = place_attention(full, mapping, "probe", 4 / 18, scores)
    assert [k for k, c in enumerate(probed[::2]) if c == "A"] == [3, 4, 9, 14]  # ties: the shallower
    assert place_attention("SMSMSM", [0, 8, 17], [8, 17]) == "SMAMAM"  # teacher layers, via the map
    with pytest.raises(ValueError, match=r"attention_layers \[5\]: not teacher layers"):
        place_attention("SMSMSM", [0, 8, 17], [5])
    with pytest.raises(ValueError, match="needs a probe score"):
        place_attention(full, mapping, "probe", 0.5, {0: 1.0})


def _config(**student):
    return {"teacher": {"name": "x"}, "student": student, "data": {"train": ["embedded"], "seq_len": 8},
            "train": {s: {"steps": 1, "batch_size": 1, "lr": 1e-3} for s in ("align", "kd", "sft")},
            "output_dir": "out"}  # fmt: skip


@pytest.mark.parametrize(("student", "message"), [
    ({"attention_fraction": 0.5}, "attention_fraction needs attention_layers"),
    ({"attention_layers": "probe"}, "needs attention_fraction"),
    ({"attention_layers": [1, 2], "attention_fraction": 0.5}, "drop attention_fraction"),
    ({"layout": "AMSM", "attention_layers": "uniform", "attention_fraction": 0.5}, "write S for every mixer"),
    ({"attention_layers": "middle", "attention_fraction": 0.5}, "student.attention_layers"),
    ({"attention_layers": "uniform", "attention_fraction": 1.5}, "student.attention_fraction"),
])  # fmt: skip
def test_bad_attention_choices_are_named(student, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_config(**student))


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_embedded_teacher(tmp_path_factory.mktemp("teacher4"), layers=4)


def run_config(teacher_dir, out, **student):
    budget = {"steps": 4, "batch_size": 2, "lr": 1e-2, "log_every": 2}
    return parse_config({
        "teacher": {"name": str(teacher_dir)},
        "student": {"layout": "SM" * 4, "experts": "upcycle", "overrides": {"ssm_chunk_size": 16}, **student},
        "data": {"train": ["embedded"], "eval": ["embedded"], "seq_len": 32},
        "align": {"calibration_samples": 4},
        "train": {"align": budget, "kd": budget, "sft": budget},
        "output_dir": str(out),
    })  # fmt: skip


def test_init_places_attention_where_the_probe_says(teacher_dir, tmp_path):
    cfg = run_config(teacher_dir, tmp_path, attention_layers="probe", attention_fraction=0.5,
                     probe={"align_steps": 3, "held_out_rows": 2})  # fmt: skip
    run_stages(cfg, "init")
    table = json.loads((tmp_path / PROBE_FILE).read_text())
    top = sorted(table["ranking"][:2])
    config = json.loads((tmp_path / "init" / "config.json").read_text())
    assert [k for k, c in enumerate(config["layout"][::2]) if c == "A"] == top
    assert config["distillation"]["attention_layers"] == top
    assert config["distillation"]["attention_placement"] == "probe"
    note = json.loads((tmp_path / "init" / "stage.json").read_text())
    assert note["layout"] == config["layout"] and len(note["attention_probe"]) == 4
    assert table["key"]["align"]["steps"] == 3 and table["key"]["held_out_rows"] == 2


def test_init_places_attention_uniformly_or_as_listed(teacher_dir, tmp_path):
    run_stages(run_config(teacher_dir, tmp_path / "u", attention_layers="uniform", attention_fraction=0.5), "init")
    assert json.loads((tmp_path / "u" / "init" / "config.json").read_text())["layout"] == "AMSMAMSM"
    assert not (tmp_path / "u" / PROBE_FILE).exists()
    run_stages(run_config(teacher_dir, tmp_path / "l", attention_layers=[3]), "init")
    config = json.loads((tmp_path / "l" / "init" / "config.json").read_text())
    assert config["layout"] == "SMSMSMAM" and config["distillation"]["attention_placement"] == "explicit"
    with pytest.raises(ValueError, match=r"student.attention_layers: attention_layers \[7\]"):
        run_stages(run_config(teacher_dir, tmp_path / "bad", attention_layers=[7]), "init")
