"""benchmarks/bench_tiny_aya_decode.py (issue 13 §4, a GPU benchmark) at tiny widths on the CPU."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_tiny_aya_decode import main, teacher_config  # noqa: E402
from transformers import Cohere2ForCausalLM  # noqa: E402


def test_the_teacher_has_tiny_ayas_published_parameter_count():
    with torch.device("meta"):
        model = Cohere2ForCausalLM(teacher_config(tiny=False, max_len=8192))
    assert sum(p.numel() for p in model.parameters()) == 3_349_227_520
    assert model.config.layer_types[:4] == ["sliding_attention"] * 3 + ["full_attention"]


def test_student_and_teacher_decode_and_only_the_teachers_cache_grows(tmp_path):
    out = tmp_path / "r.json"
    record = main(["--tiny", "--device", "cpu", "--dtype", "float32", "--lengths", "8", "24", "--steps", "2",
                   "--rounds", "1", "--out", str(out)])  # fmt: skip
    assert json.loads(out.read_text()) == json.loads(json.dumps(record, default=str))
    assert record["layout"].count("S") == 24 and record["experts"] == "split"  # configs/tiny-aya.yaml's student
    short, long = record["results"][8], record["results"][24]
    assert all(r[f"{m}_step_s"] > 0 for r in (short, long) for m in ("teacher", "student"))
    assert long["teacher_cache_bytes"] > short["teacher_cache_bytes"]  # KV grows (window 32 not reached)
    assert long["student_cache_bytes"] == short["student_cache_bytes"]  # SSM state: constant size


def test_a_real_teacher_and_student_folder_are_timed_side_by_side(tmp_path):
    from tiny_teachers import tiny_model

    from aetheris import AetherisForCausalLM
    from aetheris.distill.init import student_config
    from aetheris.teacher.introspect import introspect

    teacher = tiny_model("gemma3")
    teacher.save_pretrained(tmp_path / "teacher")
    cfg = student_config(introspect(teacher), layout="AMSMSMSM", experts="upcycle", init="random")
    AetherisForCausalLM(cfg).save_pretrained(tmp_path / "student")
    record = main(["--device", "cpu", "--dtype", "float32", "--threads", "1", "--lengths", "8", "24",
                   "--steps", "2", "--rounds", "1", "--teacher", str(tmp_path / "teacher"),
                   "--student", str(tmp_path / "student"), "--out", str(tmp_path / "r.json")])  # fmt: skip
    assert record["layout"] == "AMSMSMSM" and record["experts"] == "upcycle" and record["threads"] == 1
    assert record["parameters"]["teacher"] == sum(p.numel() for p in teacher.parameters())
    short, long = record["results"][8], record["results"][24]
    assert long["teacher_cache_bytes"] > short["teacher_cache_bytes"]
    # one attention block (window 4 in the teacher's layer 0) and three SSM blocks: the student's
    # cache grows by at most that one layer's window, far less than the teacher's four KV layers
    assert long["student_cache_bytes"] - short["student_cache_bytes"] < long["teacher_cache_bytes"] - short["teacher_cache_bytes"]
