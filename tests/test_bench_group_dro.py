"""benchmarks/bench_group_dro.py end to end on a tiny teacher: KD variants from one aligned
student, the shared top-k cache of a seed, held-out KL per family and q plots, and resuming."""

import json
import math
import sys
from pathlib import Path

import pytest
import yaml
from eval_tiny import save_embedded_teacher

from aetheris.distill.config import load_config
from aetheris.distill.pipeline import run_stages

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_group_dro  # noqa: E402
import summarise_group_dro  # noqa: E402
from hybrid_placement import run_config  # noqa: E402


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_embedded_teacher(tmp_path_factory.mktemp("teacher"), hidden=32)


def test_dro_runs_start_from_the_students_align_and_resume(teacher_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench_group_dro, "DEFAULT_KD_TOKENS", 4 * 32)  # this test's budget is the default one
    budget = {"steps": 2, "batch_size": 2, "lr": 1e-2, "log_every": 1}
    base = {"teacher": {"name": str(teacher_dir)},
            "student": {"layout": "SM", "experts": "upcycle", "overrides": {"ssm_chunk_size": 16},
                        "probe": {"align_steps": 2, "held_out_rows": 2}},
            "data": {"train": ["embedded"], "eval": ["embedded"], "seq_len": 32},
            "align": {"calibration_samples": 4},
            "kd": {"top_k_cache": True, "top_k": 8, "held_out_rows": 2},
            "train": {"align": budget, "kd": budget, "sft": budget}}  # fmt: skip
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(base))
    root, results = tmp_path / "runs", tmp_path / "results"
    student = run_config(base, "full-50p-upcycle", 2, 4 * 32, root)  # bench_hybrid's student, 2 KD steps
    run_stages(student, "all")
    args = ["--config", str(config), "--root", str(root), "--results", str(results), "--kd-tokens", str(4 * 32),
            "--held-out-rows", "6", "--eta", "0.5", "--runs", "dro-loss-s0", "uniform-s1"]  # fmt: skip
    bench_group_dro.main(args)

    # a DRO run away from the default eta is its own run, named with it; uniform runs have no eta
    assert not (results / "dro-loss-s0.json").exists()
    dro = json.loads((results / "dro-loss-s0-eta0.5.json").read_text())
    assert dro["name"] == "dro-loss-s0-eta0.5" and dro["seed"] == 0
    assert (root / "dro-language" / "dro-loss-s0-eta0.5" / "align").is_symlink()
    # every run reads SIB-200 train in rows of one language; the held-out rows are SIB-200 dev
    assert dro["data"] == {"train": ["sib200:train"], "eval": ["sib200:dev"], "pack": "language", "seq_len": 128,
                           "bos": "false"}  # §13's series: rows without the teacher's BOS
    assert dro["rows_per_step"] == 8 and dro["stage"]["tokens"] == 8 * 128  # the budget rounds up to one step
    assert dro["stage"]["weighting"] == "group_dro" and dro["dro"]["dro_eta"] == 0.5
    q = dro["stage"]["group_dro"]["q"]
    assert abs(sum(q.values()) - 1) < 1e-6 and len(q) >= 1
    assert (results / "q-dro-loss-s0-eta0.5.png").read_bytes()[:4] == b"\x89PNG"
    # one top-k cache per seed, shared by that seed's runs; the student's own (other rows) is not read
    assert (root / "dro-language" / "topk-seed0").is_dir() and (root / "dro-language" / "topk-seed1").is_dir()
    uniform = json.loads((results / "uniform-s1.json").read_text())
    assert uniform["stage"]["weighting"] == "uniform" and uniform["seed"] == 1
    assert not (results / "q-uniform-s1.png").exists()
    # every record is measured on the same held-out rows: same families and row counts
    records = [json.loads((results / f"{n}.json").read_text()) for n in ("kd-student", "dro-loss-s0-eta0.5", "uniform-s1")]
    shapes = [{f: v["rows"] for f, v in r["held_out"]["by_family"].items()} for r in records]
    assert shapes[0] == shapes[1] == shapes[2] and sum(shapes[0].values()) == 6
    for r in records:
        assert all(v["kl"] >= 0 for v in r["held_out"]["by_family"].values()) and r["held_out"]["kl"] > 0
    assert records[0]["data"] == "embedded corpus, mixed rows"  # bench_hybrid's own KD, measured beside them
    # the base student's KL is the same whichever run measures it, and differs from a trained variant's
    assert records[0]["held_out"]["kl"] != records[1]["held_out"]["kl"]

    for r in records:  # the excess CE over the teacher, bits per byte, beside the KL
        assert all(math.isfinite(v["excess_bits_per_byte"]) for v in r["held_out"]["by_family"].values())

    before = (results / "dro-loss-s0-eta0.5.json").read_text()
    capsys.readouterr()
    bench_group_dro.main(args)
    assert "dro-loss-s0-eta0.5: done" in capsys.readouterr().out
    assert (results / "dro-loss-s0-eta0.5.json").read_text() == before
    # a DRO record holds each family's q averaged over the steps; one written without it gets it
    assert json.loads(before)["q_mean"].keys() == q.keys()
    assert sum(json.loads(before)["q_mean"].values()) == pytest.approx(1)
    old = json.loads(before)
    del old["q_mean"]
    (results / "dro-loss-s0-eta0.5.json").write_text(json.dumps(old))
    bench_group_dro.main(args)
    assert json.loads((results / "dro-loss-s0-eta0.5.json").read_text()) == json.loads(before)

    # the excess-CE signal: its own run name and a top-k cache with the teacher's label log-probs
    bench_group_dro.main([*args[:-3], "--runs", "dro-loss-s0", "--signal", "excess_ce"])
    excess = json.loads((results / "dro-loss-s0-excess-eta0.5.json").read_text())
    assert excess["stage"]["group_dro"]["signal"] == "excess_ce" and excess["dro"]["dro_signal"] == "excess_ce"
    manifest = json.loads((root / "dro-language" / "topk-seed0-labels" / "manifest.json").read_text())
    assert manifest["label_logprobs"] is True

    # --remeasure adds the excess CE to a record written before it was measured, and only then
    old = json.loads(before)
    del old["held_out"]["excess_bits_per_byte"]
    (results / "dro-loss-s0-eta0.5.json").write_text(json.dumps(old))
    bench_group_dro.main([*args, "--remeasure"])
    again = json.loads((results / "dro-loss-s0-eta0.5.json").read_text())
    assert again["held_out"]["excess_bits_per_byte"] == pytest.approx(json.loads(before)["held_out"]["excess_bits_per_byte"], rel=1e-6)

    # the summary puts each run beside its study row: scored rows get DES, the rest a dash
    study = tmp_path / "results.json"
    study.write_text(json.dumps({"equity": [flores_entry("kd-uniform-s1", 0.02, [0.3, 0.5])],
                                 "des_differences": [{"task": "flores_bpb", "a": "kd-dro-loss-eta0.5", "b": "kd-uniform",
                                                      "difference": -0.003, "difference_ci": {"low": -0.006, "high": 0.001}}]}))  # fmt: skip
    summarise_group_dro.main(["--results", str(results), "--study", str(study), "--out", str(tmp_path / "sum")])
    text = (tmp_path / "sum" / "summary.md").read_text()
    assert text.startswith("## Rows without the teacher's BOS") and "Rows with the teacher's BOS" not in text
    runs_table = text.split("\n\n")[1]
    lines = {line.split("|")[1].strip(): line for line in runs_table.splitlines() if line.startswith("| ")}
    assert "0.0200 [0.0100, 0.0300]" in lines["uniform-s1"] and "Uralic +0.500" in lines["uniform-s1"]
    assert "-0.0030 [-0.0060, +0.0010]" in lines["dro-loss-s0-eta0.5"] and "kd-dro-loss-eta0.5" in lines["dro-loss-s0-eta0.5"]
    assert "| kd-student | kd-student |" in text and (tmp_path / "sum" / "des_vs_mean.png").read_bytes()[:4] == b"\x89PNG"
    assert "Held-out excess CE per family" in text and "Spearman over families" in text


def test_runs_on_rows_with_bos_are_their_own_series(tmp_path):
    """A -bos run is scored as its own study row and compared with kd-uniform-bos, in its own
    section; kd-student-bos is the study's row of that name."""
    held_out = {"kl": 1.0, "excess_bits_per_byte": 0.2, "by_family": {"Uralic": {"kl": 1.0, "excess_bits_per_byte": 0.2}}}
    results = tmp_path / "results"
    results.mkdir()
    for name in ("kd-student-bos", "uniform-s0", "uniform-s0-bos", "dro-loss-s0-bos"):
        (results / f"{name}.json").write_text(json.dumps({"name": name, "held_out": held_out}))
    study = tmp_path / "study.json"
    pair = {"task": "flores_bpb", "a": "kd-dro-loss-bos", "b": "kd-uniform-bos", "difference": -0.004,
            "difference_ci": {"low": -0.007, "high": -0.001}}  # fmt: skip
    study.write_text(json.dumps({"equity": [flores_entry(r, 0.01, [0.2, 0.4]) for r in
                                            ("kd-student-bos", "kd-uniform-bos", "kd-dro-loss-bos")],
                                 "des_differences": [pair]}))  # fmt: skip
    summarise_group_dro.main(["--results", str(results), "--study", str(study), "--out", str(tmp_path / "sum")])
    first, second = (tmp_path / "sum" / "summary.md").read_text().split("## Rows with the teacher's BOS")
    assert "| uniform-s0 | kd-uniform |" in first and "-bos" not in first
    runs_table = second.split("\n\n")[1]
    lines = {line.split("|")[1].strip(): line for line in runs_table.splitlines() if line.startswith("| ")}
    assert "| kd-student-bos | kd-student-bos |" in lines["kd-student-bos"]
    assert "kd-uniform-bos" in lines["uniform-s0-bos"] and "0.0100 [0.0050, 0.0150]" in lines["uniform-s0-bos"]
    assert "-0.0040 [-0.0070, -0.0010]" in lines["dro-loss-s0-bos"]
    assert "DES − kd-uniform-bos" in second


def flores_entry(row: str, des: float, drops: list[float]) -> dict:
    """The study report's FLORES equity entry for one row, with two families."""
    families = [{"family": f, "drop": d} for f, d in zip(("Basque", "Uralic"), drops)]
    task = {"des": des, "des_ci": {"low": des / 2, "high": des * 1.5}, "permutation_p": 0.04,
            "worst_family": "Uralic", "best_family": "Basque", "families": families,
            "languages": [{"language": lang, "drop": d} for lang, d in zip(("eu", "fi"), drops)]}  # fmt: skip
    return {"student": row, "tasks": {"flores_bpb": task}}


def test_an_unaligned_student_is_refused_with_the_command_that_builds_it(tmp_path):
    with pytest.raises(SystemExit, match="bench_hybrid.py --students full-50p-upcycle"):
        bench_group_dro.main(["--root", str(tmp_path)])


def test_runs_are_named_by_eta_only_away_from_the_default():
    assert bench_group_dro.run_name("dro-loss-s0", 0.1) == "dro-loss-s0"
    assert bench_group_dro.run_name("dro-sampling-s1", 1.0) == "dro-sampling-s1-eta1"
    assert bench_group_dro.run_name("dro-loss-s0", 0.0) == "dro-loss-s0-eta0"
    assert bench_group_dro.run_name("uniform-s1", 1.0) == "uniform-s1"
    assert bench_group_dro.run_name("dro-loss-s0", 0.1, "excess_ce") == "dro-loss-s0-excess"
    assert bench_group_dro.run_name("dro-loss-s0", 0.3, "excess_ce") == "dro-loss-s0-excess-eta0.3"
    assert bench_group_dro.run_name("uniform-s0", 0.3, "excess_ce") == "uniform-s0"
    # another budget is another run (and another top-k cache: other rows)
    assert bench_group_dro.run_name("uniform-s0", 0.1, "kl", 204_800) == "uniform-s0-200k"
    assert bench_group_dro.run_name("dro-loss-s0", 0.2, "excess_ce", 1000) == "dro-loss-s0-excess-eta0.2-1000t"
    assert bench_group_dro.run_name("uniform-s0", 0.1, "kl", 40_960) == "uniform-s0"
    assert bench_group_dro.run_name("dro-loss-s0", 0.1, "kl", 40_960, bos=True) == "dro-loss-s0-bos"
    assert (bench_group_dro.run_name("dro-sampling-s0", 0.2, "excess_ce", 40_960, True, "data")
            == "dro-sampling-s0-excess-data-eta0.2-bos")  # fmt: skip
    assert bench_group_dro.run_name("uniform-s0", 0.2, "excess_ce", 40_960, True, "data") == "uniform-s0-bos"
    assert bench_group_dro.data_for(True)["bos"] == "auto" and bench_group_dro.data_for(False)["bos"] == "false"


def test_signal_ranks_compare_each_held_out_signal_with_the_drops():
    runs = [{"name": "a"}, {"name": "b"}]
    drops = {"a": {"x": 0.1, "y": 0.2, "z": 0.3, "w": 0.4}, "b": {}}
    signals = {"KL": {"a": {"x": 4.0, "y": 3.0, "z": 2.0, "w": 1.0}, "b": {}},
               "excess CE": {"a": {"x": 0.0, "y": 0.1, "z": 0.5, "w": 0.9}, "b": {}}}  # fmt: skip
    text = summarise_group_dro.signal_ranks(runs, signals, drops)
    assert "| a | -1.00 (p 0.00, 4 families) | +1.00 (p 0.00, 4 families) |" in text and "| b |" not in text


def test_the_sib_config_distils_as_the_uniform_bos_run():
    """configs/hybrid-gemma3-270m-probe50-sib.yaml is the README's one-command build of the student
    measured as bench_group_dro's uniform-s0-200k-bos: the same student, align and KD (its own data,
    budget and seed), so the study's kd-uniform-200k-bos figures are that config's."""
    base = yaml.safe_load((ROOT / "configs" / "hybrid-gemma3-270m.yaml").read_text())
    n_layers = bench_group_dro.teacher_n_layers(base["teacher"]["name"])
    dro = {"dro_eta": 0.1, "dro_floor": 0.1, "dro_smoothing": 0.5, "dro_signal": "kl"}
    bench = bench_group_dro.dro_config(base, "full-50p-upcycle", "uniform-s0", n_layers, 204_800, Path("runs"), dro,
                                       bos=True)  # fmt: skip
    config = load_config(ROOT / "configs" / "hybrid-gemma3-270m-probe50-sib.yaml")

    def kd_side(cfg):
        d = cfg.model_dump()
        d["kd"] = {k: v for k, v in d["kd"].items() if k not in ("cache_dir", "data")}
        d["train"]["kd"].pop("log_every")
        return {"kd_data": cfg.kd_data.model_dump(), **{k: d[k] for k in ("teacher", "student", "align", "kd", "train")}}

    assert kd_side(config) == kd_side(bench)
    assert config.kd_data.train == ["sib200:train"] and config.kd_data.bos == "auto" and bench.kd_data.bos == "auto"
    # align read bench_hybrid's data (the run's own section there; bench_group_dro links that align)
    hybrid = run_config(base, "full-50p-upcycle", n_layers, 40_960, Path("runs"))
    assert config.data.model_dump() == hybrid.data.model_dump()


def test_q_mean_averages_the_q_each_step_used():
    """Step 1 draws with the stage's q0; step t with the q logged after step t - 1; the last q is
    never used. Notes from before q0 was recorded are of uniform-prior runs (1/G)."""
    records = [{"step": 1, "q/a": 0.7, "q/b": 0.3}, {"step": 2, "q/a": 0.9, "q/b": 0.1},
               {"step": 3, "q/a": 0.0, "q/b": 1.0}]  # fmt: skip
    q0 = {"a": 0.8, "b": 0.2}
    assert bench_group_dro.q_mean(records, q0) == pytest.approx({"a": (0.8 + 0.7 + 0.9) / 3, "b": (0.2 + 0.3 + 0.1) / 3})
    with pytest.raises(ValueError, match="every step logged"):
        bench_group_dro.q_mean(records[::2], q0)
    assert bench_group_dro.first_q({"group_dro": {"prior": "data", "q0": q0, "q": {}}}) == q0
    assert bench_group_dro.first_q({"group_dro": {"q": {"a": 0.9, "b": 0.1}}}) == {"a": 0.5, "b": 0.5}
    with pytest.raises(ValueError, match="no q0"):
        bench_group_dro.first_q({"group_dro": {"prior": "data", "q": {"a": 0.9, "b": 0.1}}})


def test_share_table_puts_mean_q_under_the_languages_share():
    families = [{"family": "Basque", "languages": ["eu"]}, {"family": "Uralic", "languages": ["fi", "et", "hu"]}]
    study = {"equity": [{"student": "kd-uniform-bos", "tasks": {"flores_bpb": {"families": families}}}]}
    runs = [{"name": "uniform-s0-bos"}, {"name": "dro-sampling-s0-bos", "q_mean": {"Basque": 0.4, "Uralic": 0.6}}]
    text = summarise_group_dro.share_table(runs, study, "kd-uniform-bos")
    assert "| languages' share | 0.250 | 0.750 |" in text and "| dro-sampling-s0-bos | 0.400 | 0.600 |" in text
    assert "uniform-s0-bos |" not in text
    assert summarise_group_dro.share_table(runs, {}, "kd-uniform-bos") == "(no run with q_mean yet)"
