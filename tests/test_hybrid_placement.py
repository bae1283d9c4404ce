"""benchmarks/hybrid_placement.py: bench_hybrid's student names, plus `p` for probed attention."""

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_hybrid import layout_for  # noqa: E402
from hybrid_placement import resolved_layout, run_config, student_fields  # noqa: E402


@pytest.mark.parametrize("name", ["full-50-split", "full-25-upcycle", "full-0-split", "full-12-split", "12blk-0-split"])
def test_uniform_names_give_bench_hybrids_layouts(name):
    fields = student_fields(name, 18)
    assert (fields["layout"], fields["experts"]) == layout_for(name, 18)
    assert "attention_layers" not in fields


def test_probe_names_ask_init_for_the_probe(tmp_path):
    base = yaml.safe_load((ROOT / "configs" / "hybrid-gemma3-270m.yaml").read_text())
    cfg = run_config(base, "full-25p-upcycle", 18, 200_000, tmp_path)
    s = cfg.student
    assert (s.layout, s.experts, s.attention_layers, s.attention_fraction) == ("SM" * 18, "upcycle", "probe", 0.25)
    assert cfg.train.kd.steps == 196 and cfg.output_dir == tmp_path / "full-25p-upcycle"  # 200k / (2 x 512)
    assert resolved_layout(tmp_path / "full-25p-upcycle") is None
    (tmp_path / "full-25p-upcycle" / "init").mkdir(parents=True)
    (tmp_path / "full-25p-upcycle" / "init" / "config.json").write_text('{"layout": "AMSM"}')
    assert resolved_layout(tmp_path / "full-25p-upcycle") == "AMSM"
    with pytest.raises(ValueError, match="expected full-"):
        student_fields("half-50-split", 18)
    with pytest.raises(ValueError, match="experts 'splat'"):
        student_fields("full-50-splat", 18)


def test_splittok_names_ask_for_token_experts(tmp_path):
    base = yaml.safe_load((ROOT / "configs" / "hybrid-gemma3-270m.yaml").read_text())
    s = run_config(base, "full-50p-splittok", 18, 40_960, tmp_path).student
    assert (s.experts, s.split_partition, s.split_router, s.attention_layers) == ("split", "tokens", "output", "probe")
    assert run_config(base, "full-50p-split", 18, 40_960, tmp_path).student.split_partition == "neurons"


def test_the_probe50_config_makes_bench_hybrids_probed_student():
    """`aetheris distill configs/hybrid-gemma3-270m-probe50.yaml` and bench_hybrid's full-50p-upcycle
    are one student (the study's kd-student row reads its folder, whichever made it)."""
    from aetheris.distill.config import load_config

    base = yaml.safe_load((ROOT / "configs" / "hybrid-gemma3-270m.yaml").read_text())
    bench = run_config(base, "full-50p-upcycle", 18, 40_960, Path("runs/hybrid"))
    shipped = load_config(ROOT / "configs" / "hybrid-gemma3-270m-probe50.yaml")
    assert shipped.model_dump() == bench.model_dump()
