"""benchmarks/bench_student_decode.py: a student folder timed beside its teacher, both dtypes, in
one run; its SSM state stays one size while the teacher's KV grows; bad folders exit 2."""

import json
import sys
from pathlib import Path

import pytest
from compress_models import student
from eval_tiny import save_embedded_teacher

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_student_decode  # noqa: E402


def test_student_beside_teacher_in_both_dtypes(tmp_path, capsys):
    teacher = save_embedded_teacher(tmp_path / "teacher", hidden=32)
    folder = tmp_path / "student"
    student(layout="SMSM").save_pretrained(folder)
    out = tmp_path / "r.json"
    bench_student_decode.main([str(folder), "--names", "s", "--teacher", str(teacher), "--lengths", "8", "40",
                               "--steps", "2", "--dtypes", "float32", "bfloat16", "--out", str(out)])  # fmt: skip
    rec = json.loads(out.read_text())
    assert rec["threads"] == 1 and rec["students"] == {"s": str(folder)} and "flags" in rec["cpu"]
    for dtype in ("float32", "bfloat16"):
        r = rec["results"][dtype]
        assert set(r) == {"teacher", "s"}
        assert all(r[m][n]["ms_per_token"] > 0 for m in r for n in ("8", "40"))
        assert r["s"]["40"]["cache_bytes"] == r["s"]["8"]["cache_bytes"]  # SSM state: one size
        assert r["teacher"]["40"]["cache_bytes"] > r["teacher"]["8"]["cache_bytes"]  # KV grows
    # bf16 halves the teacher's KV bytes
    assert rec["results"]["bfloat16"]["teacher"]["40"]["cache_bytes"] * 2 == rec["results"]["float32"]["teacher"]["40"]["cache_bytes"]
    text = capsys.readouterr().out
    assert "| s |" in text and "(1.00x)" in text and "40/8" in text


def test_a_folder_without_a_model_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        bench_student_decode.main([str(tmp_path), "--out", str(tmp_path / "r.json")])
    assert err.value.code == 2 and "no model folder" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
