"""Task loading, prompts and scoring on the real benchmark files, with scripted models."""

import json

import pytest
from eval_tiny import data_dir
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from aetheris.cli import app
from aetheris.eval.tasks import TASKS, TaskName, UnknownLanguageError, get_task, resolve_language
from aetheris.eval.tasks.flores import FloresBPB
from aetheris.eval.tasks.mgsm import MGSMCoT, MGSMDirect, exact_match, flexible_extract
from aetheris.eval.tasks.xcopa import XCOPA, XCOPAGen, lm_eval_choices, lm_eval_context, parse_choice


class ScriptedLM:
    """Answers every generation with a fixed text and records prompts; scores by a table."""

    def __init__(self, reply="", ll=None):
        self.reply, self.ll, self.prompts, self.stops = reply, ll, [], []

    def generate(self, prompts, stop, max_new_tokens):
        self.prompts += prompts
        self.stops.append(list(stop))
        return [self.reply(p) if callable(self.reply) else self.reply for p in prompts]

    def loglikelihood(self, requests):
        return [self.ll(c, x) for c, x in requests]


def test_registry_names_every_task_including_the_tools_plug_in():
    assert set(TASKS) == {"xcopa", "xcopa_gen", "mgsm_direct", "mgsm_cot", "flores_bpb", "tools"}
    assert all(get_task(name).name == name for name in TASKS)
    with pytest.raises(KeyError, match="expected one of"):
        get_task("xcopaa")


def test_task_choices_are_derived_from_the_registry():
    class Profile(BaseModel):
        tasks: list[TaskName]

    assert Profile(tasks=["xcopa", "tools"]).tasks == ["xcopa", "tools"]
    with pytest.raises(ValidationError, match=r"tasks\.1\n.*unknown task 'xcopaa'; expected one of xcopa, "):
        Profile(tasks=["xcopa", "xcopaa"])
    res = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "400", "NO_COLOR": "1"})
    assert f"Comma-separated: {', '.join(TASKS)}." in " ".join(res.output.split())


def test_xcopa_prompt_is_lm_eval_s():
    items = XCOPA().load("sw", data_dir(), limit=3)
    assert [it["id"] for it in items] == ["test-0", "test-1", "test-2"]
    assert lm_eval_context(items[0]) == "Kifaa kilikuwa kimefungwa kwenye mfuko vibofu kwa sababu"
    assert lm_eval_context(items[1]) == "Niliiacha mitupu mifuko yangu kwa hiyo"
    assert lm_eval_choices(items[0]) == ["kikuwa nyepesi kuvunjika.", "kilikuwa kidogo."]
    zh = XCOPA().load("zh-Hans", data_dir(), limit=1)[0]
    assert lm_eval_context(zh).endswith(" 因为") or lm_eval_context(zh).endswith(" 所以")


def test_xcopa_accuracy_follows_the_higher_likelihood():
    items = XCOPA().load("et", data_dir(), limit=20)
    # Prefers choice 2 always: accuracy is then the share of label-1 items.
    lm = ScriptedLM(ll=lambda c, x: -1.0 if any(x == " " + lm_eval_choices(it)[1] for it in items) else -2.0)
    rows = XCOPA().score(lm, items)
    assert [r["score"] for r in rows] == [float(it["label"] == 1) for it in items]


def test_xcopa_languages_and_close_matches():
    assert len(XCOPA().languages()) == 11
    assert resolve_language("ZH", XCOPA().dataset_codes()) == "zh-Hans"
    with pytest.raises(UnknownLanguageError, match="close matches: sw"):
        resolve_language("sww", {"sw": "sw", "ta": "ta"})


def test_missing_file_names_the_path_and_the_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"xcopa/data/sw/test\.sw\.jsonl.*cambridgeltl/xcopa"):
        XCOPA().load("sw", tmp_path, None)
    with pytest.raises(FileNotFoundError, match=r"mgsm_sw\.tsv.*juletxara/mgsm"):
        MGSMDirect().load("sw", tmp_path, None)
    with pytest.raises(FileNotFoundError, match=r"swh_Latn/test\.tsv.*Davlan/sib200"):
        FloresBPB().load("sw", tmp_path, None)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (" 2", 2),
        ("1. Kikuwa nyepesi", 1),
        ("Answer: 2\nmore", 2),
        ("I think option 1 is right", 1),
        ("Kilikuwa kidogo.", 2),
        ("1 or 2", None),
        ("", None),
        ("\x00\ufffd garbage 12 ###", None),
    ],
)
def test_xcopa_gen_parsing(output, expected):
    item = {"choice1": "Kikuwa nyepesi kuvunjika.", "choice2": "Kilikuwa kidogo."}
    assert parse_choice(output, item) == expected


def test_xcopa_gen_garbage_scores_wrong_never_crashes():
    items = XCOPAGen().load("sw", data_dir(), limit=5)
    rows = XCOPAGen().score(ScriptedLM(reply="\ufffd\x00 ]]"), items)
    assert [r["score"] for r in rows] == [0.0] * 5
    right = XCOPAGen().score(ScriptedLM(reply=lambda p: " 1"), items)
    assert [r["score"] for r in right] == [float(it["label"] == 0) for it in items]


def test_mgsm_direct_prompt_stops_and_scoring():
    items = MGSMDirect().load("sw", data_dir(), limit=250)
    assert len(items) == 250 and items[0]["answer"] == "18"
    lm = ScriptedLM(reply=lambda p: " Jibu ni 18.\n\n" if "Janet" in p else "")
    rows = MGSMDirect().score(lm, items[:3])
    assert lm.prompts[0].startswith("Swali: Bata wa Janet") and lm.prompts[0].endswith("\nAnswer:")
    assert lm.stops[0][0] == "Swali:"
    assert [r["score"] for r in rows] == [1.0, 0.0, 0.0]
    de = MGSMDirect().load("de", data_dir(), limit=1)
    assert MGSMDirect().prompt(de[0]).startswith("Frage: ") and MGSMDirect().prompt(de[0]).endswith(
        "\nAntwort:"
    )


def test_mgsm_answers_with_thousands_separators_match_the_hub_integer():
    items = MGSMDirect().load("en", data_dir(), None)
    assert all(it["answer"].lstrip("-").isdigit() for it in items)
    assert "2125" in {it["answer"] for it in items}


@pytest.mark.parametrize(
    ("output", "target", "ok"),
    [
        ("The answer is 1,200.", "1200", True),
        ("3 apples then 18", "18", True),
        ("$18", "18", True),
        ("18.5", "18", False),
        ("no number", "18", False),
        ("-7", "-7", True),
    ],
)
def test_mgsm_last_number_exact_match(output, target, ok):
    assert exact_match(flexible_extract(output), target) is ok


def test_mgsm_cot_uses_the_eight_native_exemplars():
    task = MGSMCoT()
    item = task.load("sw", data_dir(), limit=1)[0]
    prompt = task.prompt(item)
    shots = json.loads((data_dir() / "mgsm" / "mgsm_exemplars.json").read_text())["MGSM_EXEMPLARS"]["sw"]
    assert prompt.count("Swali:") == 9 and shots["8"]["a"] in prompt
    assert prompt.endswith(item["question"] + "\nJibu la Hatua kwa Hatua:")
    # The language's answer phrase wins over a later stray number.
    rows = task.score(ScriptedLM(reply=" 16 - 3 - 4 = 9. Jibu ni 18. (2 dola)"), [item])
    assert rows[0]["pred"] == "18." and rows[0]["score"] == 1.0  # punctuation ignored, as lm-eval


def test_flores_is_parallel_and_scored_in_bits_per_byte():
    task = FloresBPB()
    sw, zh = task.load("sw", data_dir(), None), task.load("zh-Hans", data_dir(), None)
    assert len(sw) == 204 and [x["id"] for x in sw] == [x["id"] for x in zh]  # the test split only
    every = FloresBPB(("train", "dev", "test")).load("sw", data_dir(), None)
    calibration = FloresBPB(("train",)).load("sw", data_dir(), None)
    assert len(every) == 1004 and not {x["id"] for x in sw} & {x["id"] for x in calibration}
    with pytest.raises(ValueError, match="expected some of train, dev, test"):
        FloresBPB(("devtest",))
    assert resolve_language("swh_Latn", task.dataset_codes()) == "sw"

    class Bits:
        def text_nll_bits(self, texts):
            return [8.0 * len(t) for t in texts]

    rows = task.score(Bits(), zh[:3])
    for r, it in zip(rows, zh[:3], strict=True):
        assert r["bytes"] == len(it["text"].encode()) and r["bytes"] > len(it["text"])  # CJK: 3 bytes/char
        assert r["score"] == pytest.approx(r["bits"] / r["bytes"])


def test_any_registry_form_of_a_code_is_accepted():
    # ISO 639-3 and macro-language codes name the same Swahili the task knows as "sw"
    for code in ("swh", "swa", "swh_Latn"):
        assert resolve_language(code, XCOPA().dataset_codes()) == "sw"
