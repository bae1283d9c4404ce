"""benchmarks/bench_arbitrage.py end to end on two tiny Llamas: the arbitrage set, the single
teacher's set on the same prompts, SFT on each, both scored and compared with intervals."""

import json
import sys
from pathlib import Path

import pytest
import yaml
from eval_tiny import save_tiny_pool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_arbitrage  # noqa: E402


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return save_tiny_pool(tmp_path_factory)


def test_teacher_rows_are_its_own_passing_replies():
    row = {"lang": "fr", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b says"}],
           "arbitrage": {"winner": "b", "candidates": [
               {"model": "a", "reply": " a says ", "checks": {"passed": True}},
               {"model": "b", "reply": "b says", "checks": {"passed": True}}]}}  # fmt: skip
    failed = {**row, "arbitrage": {**row["arbitrage"], "candidates": [
        {"model": "a", "reply": "x", "checks": {"passed": False}}, row["arbitrage"]["candidates"][1]]}}  # fmt: skip
    single, same, stats = bench_arbitrage.split_sets([row, failed], "a")
    assert len(single) == len(same) == 1 and same[0] is row
    assert single[0]["messages"] == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a says"}]
    assert stats["winners_on_same_prompts"] == {"b": 1} and stats["teacher_share_on_same_prompts"] == 0.0


def test_arbitrage_against_one_teacher_end_to_end(pool, tmp_path):
    cfg = {"pool": [{"model": str(p), "name": n} for n, p in pool.items()],
           "prompts": {"chats": ["embedded:chat"], "languages": ["fr", "sw", "hi"], "per_language": 2},
           "generation": {"max_new_tokens": 6, "batch_size": 4}, "checks": {"language_id": False, "echo_ratio": None}}  # fmt: skip
    config = tmp_path / "arbitrage.yaml"
    config.write_text(yaml.safe_dump(cfg))
    results = tmp_path / "results"
    args = ["--config", str(config), "--teacher", "tiny-a", "--base", str(pool["tiny-a"]), "--passes", "1",
            "--langs-per-region", "1", "--tools-ids", "e01", "--flores-limit", "2", "--n-boot", "50",
            "--root", str(tmp_path / "runs"), "--results", str(results)]  # fmt: skip
    bench_arbitrage.main(args)
    summary = json.loads((results / "summary.json").read_text())
    sets = summary["sets"]
    rows = (tmp_path / "runs" / "arbitrage" / "data.jsonl").read_text().splitlines()
    n = sets["same_prompts"]  # with the language and echo checks off, every reply passes
    assert n == sets["arbitrage_rows"] == len(rows) > 0 and sum(sets["winners_on_same_prompts"].values()) == n
    single = [json.loads(line) for line in (tmp_path / "runs" / "single.jsonl").read_text().splitlines()]
    same = [json.loads(line) for line in (tmp_path / "runs" / "arbitrage-same.jsonl").read_text().splitlines()]
    assert len(single) == len(same) == n  # the same prompts, as many examples
    assert [r["messages"][:-1] for r in single] == [r["messages"][:-1] for r in same]
    assert all(r["arbitrage"]["winner"] == "tiny-a" for r in single)
    sft = json.loads((tmp_path / "runs" / "sft-single" / "model" / "sft.json").read_text())
    assert sft["conversations"] == n
    rep = summary["arbitrage_vs_single"]
    assert rep["teacher"] == "sft-single" and rep["student"] == "sft-arbitrage" and rep["level"] == "region"
    assert len(rep["tasks"]["flores_bpb"]["languages"]) == 5
    text = (results / "summary.md").read_text()
    assert "flores_bpb per language" in text and "| arbitrage |" in text and "model − single per region" in text
    assert (results / "flores_bpb_arbitrage_vs_single.png").read_bytes()[:4] == b"\x89PNG"
