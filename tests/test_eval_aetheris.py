"""The harness on the Aetheris student itself, and the `tools` task through the runner."""

import json

import pytest
import torch
from eval_tiny import data_dir, tiny_tokenizer, training_text

from aetheris import AetherisConfig, AetherisForCausalLM
from aetheris.equity import compare
from aetheris.eval.lm import HFLM
from aetheris.eval.results import load_results
from aetheris.eval.runner import evaluate_model, plan_languages, resolve_tasks


@pytest.fixture(scope="module")
def student_lm():
    tok = tiny_tokenizer(training_text(data_dir()))
    torch.manual_seed(0)
    cfg = AetherisConfig(vocab_size=len(tok), hidden_size=48, layout="SMAM", num_attention_heads=6,
                         num_key_value_heads=2, moe_intermediate_size=32, ssm_chunk_size=16,
                         max_position_embeddings=4096)  # fmt: skip
    return HFLM(AetherisForCausalLM(cfg).eval(), tok, batch_size=4)


def test_student_runs_every_task_and_feeds_equity(student_lm, tmp_path):
    tasks = resolve_tasks(["xcopa", "flores_bpb", "tools", "mgsm_direct"])
    for t in tasks:
        if hasattr(t, "max_new_tokens"):
            t.max_new_tokens = 16  # garbage from a random model: keep it short
    plan = plan_languages(tasks, ["sw", "ja", "zh-Hans"])
    result = evaluate_model(student_lm, "tiny/aetheris", tasks, plan, tmp_path, data_dir(), limit=4)
    saved = json.loads(open(result["path"], encoding="utf-8").read())
    assert saved["tasks"]["tools"]["languages"]["sw"]["n"] == 4
    for item in saved["tasks"]["tools"]["languages"]["ja"]["items"]:  # random output: wrong, categorised
        assert item["score"] in (0.0, 1.0) and (item["score"] == 1.0 or item["category"])
    assert set(saved["tasks"]["flores_bpb"]["languages"]) == {"sw", "ja", "zh-Hans"}
    # the same file is a valid teacher/student input to the equity computation
    report = compare(load_results(result["path"]), load_results(result["path"]), n_boot=50, n_perm=50)
    assert report is not None


def test_cli_prints_tool_failure_categories(tmp_path):
    from eval_tiny import save_tiny_model
    from typer.testing import CliRunner

    from aetheris.cli import app

    model = save_tiny_model(tmp_path / "tiny", data_dir())
    args = ["eval", str(model), "--tasks", "tools", "--langs", "sw,ja", "--limit", "3", "--max-new-tokens", "8",
            "--out", str(tmp_path / "out"), "--batch-size", "3"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "failures: " in res.output and "no_call" in res.output  # garbage replies call nothing
