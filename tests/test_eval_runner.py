"""The runner: schema, resumable per-item cache, language validation, the CLI."""

import json

import pytest
from eval_tiny import data_dir, save_tiny_model, tiny_llama, tiny_tokenizer, training_text
from transformers import AutoTokenizer
from typer.testing import CliRunner

from aetheris.cli import app
from aetheris.eval.lm import HFLM
from aetheris.eval.runner import ItemCache, evaluate_model, plan_languages, resolve_tasks
from aetheris.eval.tasks import UnknownLanguageError


@pytest.fixture(scope="module")
def lm():
    tok = tiny_tokenizer(training_text(data_dir()))
    return HFLM(tiny_llama(tok), tok, batch_size=4)


class Counting:
    """Wraps a task and counts the items it actually scores."""

    def __init__(self, task):
        self.task, self.scored = task, 0

    def __getattr__(self, name):
        return getattr(self.task, name)

    def score(self, lm, items):
        self.scored += len(items)
        return self.task.score(lm, items)


def run(lm, tasks, out, limit, langs=("sw",)):
    plan = plan_languages(tasks, list(langs))
    return evaluate_model(lm, "tiny/model", tasks, plan, out, data_dir(), limit)


def test_results_follow_the_schema(lm, tmp_path):
    result = run(lm, resolve_tasks(["xcopa", "flores_bpb"]), tmp_path, limit=5)
    saved = json.loads((tmp_path / result["path"].split("/")[-1]).read_text())
    assert saved["schema"] == "aetheris.results/1" and saved["model"] == "tiny/model"
    assert saved["model_name"] == "model" and saved["created"].endswith("Z")
    xc = saved["tasks"]["xcopa"]
    assert (xc["metric"], xc["higher_is_better"]) == ("acc", True)
    sw = xc["languages"]["sw"]
    assert sw["n"] == 5 and sw["score"] == pytest.approx(sum(i["score"] for i in sw["items"]) / 5)
    bpb = saved["tasks"]["flores_bpb"]
    assert (bpb["metric"], bpb["higher_is_better"]) == ("bits_per_byte", False)
    items = bpb["languages"]["sw"]["items"]
    assert bpb["languages"]["sw"]["score"] == pytest.approx(
        sum(i["bits"] for i in items) / sum(i["bytes"] for i in items)
    )
    assert 0 < bpb["languages"]["sw"]["score"] < 64


def test_rerun_with_a_larger_limit_computes_only_new_items(lm, tmp_path):
    first = [Counting(t) for t in resolve_tasks(["xcopa"])]
    a = run(lm, first, tmp_path, limit=6)
    assert first[0].scored == 6
    second = [Counting(t) for t in resolve_tasks(["xcopa"])]
    b = run(lm, second, tmp_path, limit=10)
    assert second[0].scored == 4
    items_a = a["tasks"]["xcopa"]["languages"]["sw"]["items"]
    assert b["tasks"]["xcopa"]["languages"]["sw"]["items"][:6] == items_a
    assert b["tasks"]["xcopa"]["languages"]["sw"]["n"] == 10


def test_a_torn_last_cache_line_is_ignored_and_recomputed(lm, tmp_path):
    tasks = [Counting(t) for t in resolve_tasks(["xcopa"])]
    good = run(lm, tasks, tmp_path, limit=6)
    (cache,) = (tmp_path / "cache").rglob("*.jsonl")
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # crash mid-write
    again = [Counting(t) for t in resolve_tasks(["xcopa"])]
    redo = run(lm, again, tmp_path, limit=6)
    assert again[0].scored == 1
    assert redo["tasks"]["xcopa"]["languages"]["sw"] == good["tasks"]["xcopa"]["languages"]["sw"]
    assert len(ItemCache(cache).read()) == 6


def test_languages_are_validated_with_close_matches():
    tasks = resolve_tasks(["xcopa", "mgsm_direct"])
    plan = plan_languages(tasks, ["sw", "de", "zh"])
    assert plan == {"xcopa": ["sw", "zh-Hans"], "mgsm_direct": ["sw", "de", "zh-Hans"]}
    with pytest.raises(UnknownLanguageError, match="close matches: sw"):
        plan_languages(tasks, ["sww"])  # a typo: not a code of any language


def test_garbage_generations_score_zero(lm, tmp_path):
    tasks = resolve_tasks(["xcopa_gen", "mgsm_direct"])
    for t in tasks:
        t.max_new_tokens = 8
    result = run(lm, tasks, tmp_path, limit=2)
    for name in ("xcopa_gen", "mgsm_direct"):
        assert result["tasks"][name]["languages"]["sw"]["n"] == 2  # random model: scored, no crash


def test_cli_end_to_end(tmp_path):
    model = save_tiny_model(tmp_path / "tiny", data_dir())
    out = tmp_path / "out"
    args = ["eval", str(model), "--tasks", "xcopa,flores_bpb", "--langs", "sw,zh", "--limit", "3"]
    args += ["--data-dir", str(data_dir()), "--out", str(out), "--batch-size", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    (path,) = out.glob("*.json")
    saved = json.loads(path.read_text())
    assert set(saved["tasks"]["flores_bpb"]["languages"]) == {"sw", "zh-Hans"}
    bad = CliRunner().invoke(
        app, ["eval", str(model), "--tasks", "xcopa", "--langs", "sww", "--out", str(out)]
    )
    assert bad.exit_code == 2 and "close matches" in bad.output


def test_items_cached_in_one_dtype_are_not_reused_by_another(tmp_path):
    from aetheris.eval.runner import run as run_models

    model = str(save_tiny_model(tmp_path / "tiny", data_dir()))
    kw = dict(langs=["sw"], data_dir=data_dir(), limit=2, batch_size=2)
    run_models([model], ["flores_bpb"], tmp_path / "out", dtype="float32", **kw)
    run_models([model], ["flores_bpb"], tmp_path / "out", dtype="bfloat16", **kw)
    # one cache file per (task, settings): bf16 scored its own items instead of reading fp32's
    caches = sorted((tmp_path / "out" / "cache").rglob("*.jsonl"))
    assert len(caches) == 2 and all(len(ItemCache(c).read()) == 2 for c in caches)


def test_native_dtype_is_cached_under_the_dtype_it_resolves_to(tmp_path, monkeypatch):
    """A cache written where `native` meant fp32 must not be read where it means bf16 (a study
    resumed on another CPU), and must be read by an explicit float32 run on any machine."""
    import aetheris.eval.lm as lm_module
    from aetheris.eval.runner import run as run_models

    model = str(save_tiny_model(tmp_path / "tiny", data_dir()))
    kw = dict(langs=["sw"], data_dir=data_dir(), limit=2, batch_size=2)
    monkeypatch.setattr(lm_module, "native_dtype", lambda device: "float32")
    run_models([model], ["flores_bpb"], tmp_path / "out", dtype="native", **kw)
    run_models([model], ["flores_bpb"], tmp_path / "out", dtype="float32", **kw)
    assert len(sorted((tmp_path / "out" / "cache").rglob("*.jsonl"))) == 1
    monkeypatch.setattr(lm_module, "native_dtype", lambda device: "bfloat16")
    run_models([model], ["flores_bpb"], tmp_path / "out", dtype="native", **kw)
    assert len(sorted((tmp_path / "out" / "cache").rglob("*.jsonl"))) == 2


def test_a_folder_rebuilt_in_place_is_scored_again(tmp_path):
    """Items are cached by path; a cache scored on another model under that path is dropped
    (`aetheris.eval.identity`), and one from before identities were recorded is kept."""
    from aetheris.eval.identity import IDENTITY_FILE, model_identity
    from aetheris.eval.runner import run as run_models

    model = str(save_tiny_model(tmp_path / "tiny", data_dir()))
    kw = dict(langs=["sw"], data_dir=data_dir(), limit=2, batch_size=2, dtype="float32")

    def scores(out):
        (res,) = run_models([model], ["flores_bpb"], out, **kw)
        return [it["score"] for it in res["tasks"]["flores_bpb"]["languages"]["sw"]["items"]]

    first = scores(tmp_path / "out")
    (marker,) = (tmp_path / "out" / "cache").glob(f"*/{IDENTITY_FILE}")
    assert json.loads(marker.read_text())["identity"] == model_identity(model)["identity"]
    marker.unlink()  # a cache written before identities: trusted, and given one
    assert scores(tmp_path / "out") == first and marker.is_file()
    tiny_llama(AutoTokenizer.from_pretrained(model), seed=1).save_pretrained(model)  # rebuilt in place
    again = scores(tmp_path / "out")
    assert again != first and again == scores(tmp_path / "fresh")
