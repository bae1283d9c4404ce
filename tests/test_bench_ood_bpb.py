"""benchmarks/bench_ood_bpb.py: MGSM questions' bits/byte per language beside a reference model,
with a paired bootstrap interval of the mean ratio; a model against itself is exactly 1."""

import json
import sys
from pathlib import Path

import pytest
from eval_tiny import save_embedded_teacher

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_ood_bpb  # noqa: E402


def test_ratios_to_the_reference_with_intervals(tmp_path, capsys):
    a = save_embedded_teacher(tmp_path / "a", hidden=32)
    b = save_embedded_teacher(tmp_path / "b", hidden=48)
    out = tmp_path / "r.json"
    bench_ood_bpb.main([str(a), str(a), str(b), "--names", "ref", "same", "other", "--langs", "en", "sw",
                        "--limit", "6", "--n-boot", "50", "--out", str(out)])  # fmt: skip
    rec = json.loads(out.read_text())
    s = rec["summary"]
    assert rec["reference"] == "ref" and s["ref"]["x_reference"] == 1.0 and s["ref"]["x_reference_ci"] is None
    assert s["same"]["x_reference"] == pytest.approx(1.0) and s["same"]["x_reference_ci"] == pytest.approx([1.0, 1.0])
    low, high = s["other"]["x_reference_ci"]
    assert s["other"]["x_reference"] != pytest.approx(1.0) and low <= s["other"]["x_reference"] <= high
    assert len(rec["questions"]["other"]["sw"]["bits"]) == 6 and all(x > 0 for x in rec["questions"]["other"]["sw"]["bits"])
    assert set(s["other"]["bits_per_byte"]) == {"en", "sw"}
    assert "| other |" in capsys.readouterr().out


def test_an_unknown_language_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        bench_ood_bpb.main(["gemma3-270m", "--langs", "xx", "--out", str(tmp_path / "r.json")])
    assert err.value.code == 2 and "--langs xx" in capsys.readouterr().err
