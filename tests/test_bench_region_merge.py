"""benchmarks/bench_region_merge.py end to end on a tiny Llama: global and region SFT from one
base, the merges, both tasks scored for every model, drops per region against the global model
with intervals, and a rerun that redoes nothing."""

import json
import sys
from pathlib import Path

import pytest
from eval_tiny import save_embedded_teacher

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_region_merge  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_embedded_teacher(tmp_path_factory.mktemp("base"), hidden=32)


def test_region_languages_cover_both_tasks():
    langs = bench_region_merge.eval_languages(2)
    assert set(langs) == {"Africa", "South Asia", "Europe", "Asia-Pacific", "West Asia"}
    assert all(len(v) == 2 for v in langs.values())
    from aetheris import languages

    assert all(languages.get(c).region == r for r, codes in langs.items() for c in codes)


def test_region_recipe_end_to_end_and_resume(base, tmp_path, capsys, monkeypatch):
    root, results = tmp_path / "runs", tmp_path / "results"
    args = ["--base", str(base), "--passes", "0.01", "--regions", "Africa", "Europe", "--langs-per-region", "1",
            "--tools-ids", "e01", "e19", "--flores-limit", "2", "--n-boot", "50", "--batch-size", "2",
            "--root", str(root), "--results", str(results)]  # fmt: skip
    def stop(*a, **k):
        raise RuntimeError("stopped before the merges")

    monkeypatch.setattr(bench_region_merge, "merges", stop)
    with pytest.raises(RuntimeError):
        bench_region_merge.main(args)
    # a run stopped midway has scored what it reached, base vs global first (issue 16 §1)
    partial = json.loads((results / "summary.json").read_text())["against_global"]
    assert set(partial) == {"base", "region-africa", "region-europe"}
    monkeypatch.undo()

    bench_region_merge.main(args)
    sft = json.loads((results / "sft.json").read_text())["runs"]
    assert set(sft) == {"global", "region-africa", "region-europe"}
    assert sft["region-africa"]["region"] == "Africa" and sft["global"]["region"] is None
    # one pass is each run's own conversations: a region has fewer than the global mixture
    assert sft["region-africa"]["conversations"] < sft["region-europe"]["conversations"] < sft["global"]["conversations"]
    assert not (root / "global" / "run" / "checkpoints").exists()  # the folder is written: no resume state kept
    evals = {p.stem for p in (results / "evals").glob("*.json")}
    assert evals == {"base", "global", "region-africa", "region-europe", "linear-africa", "linear-europe",
                     "slerp-africa", "ties-africa"}  # fmt: skip
    linear = json.loads((results / "evals" / "linear-africa.json").read_text())
    langs = bench_region_merge.eval_languages(1)
    assert set(linear["tasks"]) == {"tools", "flores_bpb"}
    assert set(linear["tasks"]["tools"]["languages"]) == {*langs["Africa"], *langs["Europe"]}
    assert all(len(block["items"]) == 2 for block in linear["tasks"]["tools"]["languages"].values())
    summary = json.loads((results / "summary.json").read_text())
    rep = summary["against_global"]["region-africa"]
    assert rep["level"] == "region" and rep["teacher"] == "global"
    flores = {f["family"]: f for f in rep["tasks"]["flores_bpb"]["families"]}
    assert set(flores) == {"Africa", "Europe"} and all(f["drop_ci"] is not None for f in flores.values())
    assert set(summary["tools_by_category"]["base"]["acc"]) >= {"all/all", "all/simple", "all/irrelevance"}
    text = (results / "summary.md").read_text()
    assert "| region-africa |" in text and "**" in text  # the own-region cell is marked
    assert (results / "flores_bpb_vs_global.png").read_bytes()[:4] == b"\x89PNG"

    capsys.readouterr()
    before = {p.name: p.read_text() for p in (results / "evals").glob("*.json")}
    bench_region_merge.main(args)
    out = capsys.readouterr().out
    assert "SFT," not in out and "merging" not in out  # nothing trained or merged again
    assert {p.name: p.read_text() for p in (results / "evals").glob("*.json")} == before
