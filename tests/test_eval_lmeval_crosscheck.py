"""Our XCOPA and MGSM-direct numbers equal lm-evaluation-harness's, item by item, on the same
tiny model and the same local files. lm-eval runs its own task configs (included from the
installed package); only the data source is pointed at the local copies."""

import json
import os
from pathlib import Path

import pytest
import torch
from eval_tiny import data_dir, save_tiny_model
from greedy import decided, greedy_with_margins

from aetheris.eval.lm import HFLM
from aetheris.eval.tasks.mgsm import MGSMDirect
from aetheris.eval.tasks.xcopa import XCOPA

lm_eval = pytest.importorskip("lm_eval")
# About two minutes on 2 shared CPU cores, most of it lm-eval itself.
pytestmark = pytest.mark.slow

LANGS = ("sw", "zh")
LIMIT = 20
GEN_TOKENS = 16


def write_local_tasks(tmp: Path, root: Path) -> Path:
    lm_tasks = Path(lm_eval.__file__).parent / "tasks"
    tasks = tmp / "tasks"
    tasks.mkdir()
    for lang in LANGS:
        (tasks / f"xcopa_{lang}.yaml").write_text(
            f"include: {lm_tasks}/xcopa/default_{lang}.yaml\n"
            f"task: local_xcopa_{lang}\n"
            "dataset_path: json\ndataset_name: null\ndataset_kwargs:\n  data_files:\n"
            f"    test: {root}/xcopa/data/{lang}/test.{lang}.jsonl\n"
            f"    validation: {root}/xcopa/data/{lang}/val.{lang}.jsonl\n",
            encoding="utf-8",
        )
        # The hub's MGSM test split as JSON: question, answer=None, answer_number.
        rows = (root / "mgsm" / f"mgsm_{lang}.tsv").read_text(encoding="utf-8").splitlines()
        with (tmp / f"mgsm_{lang}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows[:LIMIT]:
                q, a = row.split("\t")
                f.write(
                    json.dumps({"question": q, "answer": None, "answer_number": int(a.replace(",", ""))})
                    + "\n"
                )
        (tasks / f"mgsm_{lang}.yaml").write_text(
            f"include: {lm_tasks}/mgsm/direct/mgsm_direct_{lang}.yaml\n"
            f"task: local_mgsm_direct_{lang}\n"
            "dataset_path: json\ndataset_name: null\ntraining_split: null\ndataset_kwargs:\n  data_files:\n"
            f"    test: {tmp}/mgsm_{lang}.jsonl\n",
            encoding="utf-8",
        )
    return tasks


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    tmp = tmp_path_factory.mktemp("lmeval")
    root = data_dir()
    model = save_tiny_model(tmp / "model", root)
    from lm_eval.tasks import TaskManager

    names = [f"local_{t}_{lang}" for t in ("xcopa", "mgsm_direct") for lang in LANGS]
    res = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model},dtype=float32",
        tasks=names,
        task_manager=TaskManager(include_path=str(write_local_tasks(tmp, root))),
        limit=LIMIT,
        batch_size=1,
        device="cpu",
        gen_kwargs=f"max_gen_toks={GEN_TOKENS}",
        log_samples=True,
    )
    ours = HFLM.load(str(model), device="cpu", batch_size=4, dtype="float32")
    return res["samples"], ours, root


@pytest.mark.parametrize("lang", LANGS)
def test_xcopa_matches_lm_eval_item_by_item(setup, lang):
    samples, lm, root = setup
    theirs = sorted(samples[f"local_xcopa_{lang}"], key=lambda s: s["doc_id"])
    task = XCOPA()
    items = task.load("zh-Hans" if lang == "zh" else lang, root, LIMIT)
    ours = task.score(lm, items)
    assert len(theirs) == len(ours) == LIMIT
    for s, r in zip(theirs, ours, strict=True):
        assert [list(a) for a in s["arguments"]] == [[c, x] for c, x in task_requests(items[s["doc_id"]])]
        assert r["ll"] == pytest.approx([ll for ll, _ in s["filtered_resps"]], abs=1e-3)
        if abs(r["ll"][0] - r["ll"][1]) > 2e-3:  # a decision within the tolerance is a tie
            assert r["score"] == s["acc"]


def task_requests(item):
    from aetheris.eval.tasks.xcopa import lm_eval_choices, lm_eval_context

    return [(lm_eval_context(item), " " + c) for c in lm_eval_choices(item)]


@pytest.mark.parametrize("lang", LANGS)
def test_mgsm_direct_matches_lm_eval_item_by_item(setup, lang):
    samples, lm, root = setup
    theirs = sorted(
        (s for s in samples[f"local_mgsm_direct_{lang}"] if s["filter"] == "flexible-extract"),
        key=lambda s: s["doc_id"],
    )
    task = MGSMDirect(max_new_tokens=GEN_TOKENS)
    items = task.load("zh-Hans" if lang == "zh" else lang, root, LIMIT)
    ours = task.score(lm, items)
    assert len(theirs) == len(ours) == LIMIT
    checked = 0
    for s, r, it in zip(theirs, ours, items, strict=True):
        assert s["arguments"][0][0] == task.prompt(it)
        # lm-eval decodes one prompt at a time, we decode batches: the same greedy text wherever
        # no step is a near-tie (greedy.py), which must be most items.
        ids = torch.tensor([lm.encode(lm.format_prompt(task.prompt(it)), add_special_tokens=not lm.chat_template)])
        if not decided(greedy_with_margins(lm.model, ids, GEN_TOKENS, pad_token_id=lm.pad_id)[1]):
            continue
        checked += 1
        assert r["output"] == s["resps"][0][0]
        assert r["pred"] == s["filtered_resps"][0]
        assert r["score"] == s["exact_match"]
    assert checked >= LIMIT // 2
