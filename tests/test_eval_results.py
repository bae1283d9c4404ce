"""The results file: one schema for the writer (the runner) and every reader (equity, report, study)."""

import json

import numpy as np
import pytest
from eval_tiny import data_dir, tiny_llama, tiny_tokenizer, training_text

from aetheris.eval.lm import HFLM
from aetheris.eval.results import (
    SCHEMA,
    ItemResult,
    ModelResults,
    ResultsError,
    aggregate,
    item_arrays,
    load_results,
    save_results,
    statistic,
)
from aetheris.eval.runner import evaluate_model, plan_languages, resolve_tasks


def results(model="runs/m", tasks=None) -> dict:
    acc = [{"id": "0", "score": 1.0, "pred": 1, "ll": [-3.5, -1.25]},
           {"id": "1", "score": 0.0, "pred": None, "output": "ñ 2"}]  # fmt: skip
    bpb = [
        {"id": "a", "score": 0.5, "bits": 10.0, "bytes": 20},
        {"id": "b", "score": 2.0, "bits": 20.0, "bytes": 10},
    ]
    return {
        "schema": SCHEMA,
        "model": model,
        "model_name": "m",
        "created": "2026-12-01T00:00:00Z",
        "tasks": tasks
        or {
            "xcopa": {
                "metric": "acc",
                "higher_is_better": True,
                "languages": {"sw": {"score": 0.5, "n": 2, "items": acc}},
            },
            "flores_bpb": {
                "metric": "bits_per_byte",
                "higher_is_better": False,
                "languages": {"sw": {"score": 1.0, "n": 2, "items": bpb}},
            },
        },  # fmt: skip
    }


def test_a_file_reads_and_writes_back_unchanged(tmp_path):
    # Task-specific item fields (pred, ll, output, nulls) survive; no bits/bytes appear where none were.
    src = tmp_path / "in.json"
    src.write_text(json.dumps(results(), ensure_ascii=False, indent=1), encoding="utf-8")
    out = save_results(load_results(src), tmp_path / "sub" / "out.json")
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(src.read_text(encoding="utf-8"))
    assert [p.name for p in out.parent.iterdir()] == ["out.json"]  # the temporary file is gone


def test_the_runner_writes_what_the_readers_accept(tmp_path):
    tok = tiny_tokenizer(training_text(data_dir()))
    lm = HFLM(tiny_llama(tok), tok, batch_size=4)
    tasks = resolve_tasks(["xcopa", "flores_bpb"])
    written = evaluate_model(lm, "tiny/model", tasks, plan_languages(tasks, ["sw"]), tmp_path, data_dir(), 3)
    loaded = load_results(written["path"])
    assert loaded.to_json() == json.loads(open(written["path"], encoding="utf-8").read())
    assert {k: v for k, v in written.items() if k != "path"} == loaded.to_json()
    bpb = loaded.tasks["flores_bpb"].languages["sw"]
    assert bpb.score == pytest.approx(sum(i.bits for i in bpb.items) / sum(i.bytes for i in bpb.items))
    assert set(loaded.item_scores("xcopa", "sw")) == {"test-0", "test-1", "test-2"}


def test_the_language_score_rule():
    acc = [ItemResult(id=str(k), score=s) for k, s in enumerate([1.0, 0.0, 0.0, 1.0])]
    bpb = [
        ItemResult(id=str(k), score=b / n, bits=b, bytes=n) for k, (b, n) in enumerate([(3.0, 1), (1.0, 3)])
    ]
    assert aggregate(acc) == 0.5
    assert aggregate(bpb) == 1.0  # sum(bits) / sum(bytes), not the mean of per-item ratios (5/3)
    assert np.isnan(aggregate([]))
    assert np.isnan(aggregate([ItemResult(id="0", score=0.0, bits=0.0, bytes=0)]))
    assert aggregate([ItemResult(id="0", score=0.25, bits=3.0)]) == 0.25  # bits without bytes: no ratio
    # the bootstrap's vectorised form gives, row by row, what aggregate gives for that resample
    idx = np.random.default_rng(0).integers(0, 4, size=(20, 4))
    rows = statistic(item_arrays(acc), idx)
    assert rows.tolist() == [aggregate([acc[i] for i in row]) for row in idx]
    assert item_arrays(bpb, order=["1", "0"])["bits"].tolist() == [1.0, 3.0]


def edit(data: dict, path: str, value) -> dict:
    *keys, last = path.split(".")
    node = data
    for key in keys:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value
    return data


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("schema", "aetheris.results/0", r"schema: is 'aetheris.results/0', expected 'aetheris.results/1'"),
        ("tasks.xcopa.metric", None, r"tasks\.xcopa\.metric: Input should be a valid string"),
        (
            "tasks.xcopa.languages.sw.score",
            0.75,
            r"tasks\.xcopa\.languages\.sw: score 0.75 but its items give 0.5",
        ),
        ("tasks.xcopa.languages.sw.n", 3, r"tasks\.xcopa\.languages\.sw: n is 3 but there are 2 items"),
        (
            "tasks.flores_bpb.languages.sw.items.1.bits",
            None,
            r"every item carries `bits` and `bytes` or none",
        ),
        (
            "tasks.xcopa.languages.sw.items.0.score",
            "high",
            r"items\.0\.score: Input should be a valid number",
        ),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_and_key(tmp_path, path, value, message):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(edit(results(), path, value)), encoding="utf-8")
    with pytest.raises(
        ResultsError, match=rf"^{tmp_path}/bad\.json: not an aetheris\.results/1 results file: .*{message}"
    ) as e:
        load_results(bad)
    assert "\n" not in str(e.value) and isinstance(e.value, ValueError)


def test_unreadable_files(tmp_path):
    (tmp_path / "torn.json").write_text('{"schema": "aetheris.res', encoding="utf-8")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ResultsError, match=r"torn\.json: not valid JSON"):
        load_results(tmp_path / "torn.json")
    with pytest.raises(
        ResultsError, match=r"list\.json: expected a JSON object \(aetheris\.results/1\), got list"
    ):
        load_results(tmp_path / "list.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_results(tmp_path / "missing.json")


def test_item_scores_name_what_is_missing():
    res = load_results(results())
    assert res.item_scores("flores_bpb", "sw") == {"a": 0.5, "b": 2.0}
    with pytest.raises(KeyError, match="no task 'mgsm_cot'; it has xcopa, flores_bpb"):
        res.item_scores("mgsm_cot", "sw")
    with pytest.raises(KeyError, match="task 'xcopa' has no language 'ta'"):
        res.item_scores("xcopa", "ta")


def test_runs_of_one_model_merge_and_conflicts_are_refused():
    full = results()
    xcopa = load_results(results(tasks={"xcopa": full["tasks"]["xcopa"]}))
    flores = load_results(results(tasks={"flores_bpb": full["tasks"]["flores_bpb"]}))
    merged = xcopa.merge(flores)
    assert merged == load_results(full)
    assert xcopa.merge(xcopa) == xcopa  # the same language twice, the same numbers: fine
    assert set(xcopa.tasks) == {"xcopa"}  # merging returned a new object
    changed = edit(results(), "tasks.xcopa.languages.sw.items.0.pred", 0)
    with pytest.raises(ValueError, match="task 'xcopa', language 'sw': the two results differ"):
        xcopa.merge(load_results(changed))
    relabelled = edit(results(), "tasks.xcopa.metric", "f1")
    with pytest.raises(ValueError, match="task 'xcopa': the two results disagree on its metric"):
        xcopa.merge(load_results(relabelled))
    with pytest.raises(ValueError, match="cannot merge results of 'runs/other'"):
        xcopa.merge(load_results(results(model="runs/other")))


def test_a_model_built_in_python_defaults_to_the_current_schema():
    res = ModelResults(model="m", model_name="m", tasks={})
    assert res.to_json()["schema"] == SCHEMA and load_results(res.to_json()) == res
