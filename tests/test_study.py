"""`aetheris study` on configs/study-demo.yaml with a tiny teacher: the report, resuming after a
kill, errors before any work, and compositions (int8 of a pruned model and of a student)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from compress_models import student, tokenizer
from eval_tiny import data_dir, tiny_llama
from typer.testing import CliRunner

from aetheris.cli import app
from aetheris.compress import read_record
from aetheris.eval.tasks.flores import FloresBPB
from aetheris.eval.tasks.xcopa import XCOPA
from aetheris.study import PROFILES, load_study
from aetheris.study.config import StudyConfigError
from aetheris.study.run import run_study

DEMO = Path(__file__).resolve().parents[1] / "configs" / "study-demo.yaml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A tiny Llama teacher and a tiny Aetheris student, both with a real BPE tokenizer."""
    root = tmp_path_factory.mktemp("models")
    tok = tokenizer()
    # Not named "teacher": the teacher's row is named as its model (here "tiny-llama").
    tiny_llama(tok).save_pretrained(root / "tiny-llama")
    tok.save_pretrained(root / "tiny-llama")
    student().save_pretrained(root / "student")
    tok.save_pretrained(root / "student")
    return {"teacher": root / "tiny-llama", "student": root / "student"}


def demo_config(tiny: dict[str, Path], out: Path, extra: list[dict] | None = None, keep: int | None = None) -> dict:
    """configs/study-demo.yaml with the tiny teacher (the models and profile as the demo has them)."""
    cfg = yaml.safe_load(DEMO.read_text())
    cfg["teacher"]["model"] = str(tiny["teacher"])
    cfg["out"] = str(out)
    cfg["n_boot"], cfg["n_perm"] = 200, 200
    cfg["models"] = cfg["models"][:keep] + (extra or [])
    return cfg


def write(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def demo(tiny, tmp_path_factory) -> Path:
    data_dir()  # skips without the benchmark data
    d = tmp_path_factory.mktemp("demo")
    extra = [
        {"name": "student", "path": str(tiny["student"])},
        {"name": "student-int8", "of": "student", "compress": {"method": "int8"}},
        {"name": "kd-later", "path": str(d / "not-yet"), "optional": True},
        {"name": "kd-later-int8", "of": "kd-later", "compress": {"method": "int8"}},
    ]
    raw = demo_config(tiny, d / "out", extra)
    raw["compare"] = [{"a": "wanda-50-en", "b": "wanda-50"}, {"a": "kd-later", "b": "int8"}]
    cfg = write(raw, d / "study.yaml")
    result = CliRunner().invoke(app, ["study", str(cfg)])
    assert result.exit_code == 0, result.output
    return d / "out"


def test_demo_writes_table_html_and_results(demo):
    report = demo / "report"
    md = (report / "report.md").read_text()
    data = json.loads((report / "results.json").read_text())
    rows = {m["name"]: m for m in data["models"]}
    expected = {"tiny-llama", "int8", "int4-g32", "wanda-50", "wanda-50-en", "wanda-50-int8", "student",
                "student-int8"}
    assert expected | {"kd-later", "kd-later-int8"} == set(rows)
    for name in expected:
        m = rows[name]
        assert m["missing"] is None
        assert m["bytes_on_disk"] > 0 and m["parameters"] > 0
        assert m["prefill_tokens_per_s"] > 0 and m["decode_tokens_per_s"] > 0
        assert f"| {name} |" in md
    assert "does not exist yet" in rows["kd-later"]["missing"]
    for facts in (demo / "facts").glob("*.json"):  # how busy the machine was when it timed the row
        assert json.loads(facts.read_text())["load_average_1min"] >= 0
    assert "kd-later, which is missing" in rows["kd-later-int8"]["missing"]
    assert "Not in the table: kd-later" in md
    assert rows["tiny-llama"]["method"] == "teacher" and data["teacher"] == "tiny-llama"
    assert rows["tiny-llama"]["bits_per_weight"] == pytest.approx(32, abs=0.5)  # fp32 weights
    assert rows["int8"]["bits_per_weight"] < rows["tiny-llama"]["bits_per_weight"]
    # One equity report per evaluated row besides the teacher, both tasks of the profile.
    assert {e["student"] for e in data["equity"]} == expected - {"tiny-llama"}
    assert all(set(e["tasks"]) == {"flores_bpb", "xcopa"} for e in data["equity"])
    assert "DES CI width" in md and "flores_bpb DES [95% CI]" in md
    for fig in ("flores_bpb_frontier", "xcopa_drop_fertility", "xcopa_drop_tier", "flores_bpb_families"):
        assert (report / "figures" / f"{fig}.png").stat().st_size > 1000
    html = (report / "report.html").read_text()
    assert "data:image/png;base64," in html and 'src="figures/' not in html  # self-contained


def test_demo_reports_paired_des_differences(demo):
    report = demo / "report"
    md = (report / "report.md").read_text()
    data = json.loads((report / "results.json").read_text())
    diffs = {d["task"]: d for d in data["des_differences"]}
    assert set(diffs) == {"flores_bpb", "xcopa"}
    des = {(e["student"], t): eq["des"] for e in data["equity"] for t, eq in e["tasks"].items()}
    for task, d in diffs.items():
        assert (d["a"], d["b"], d["paired"]) == ("wanda-50-en", "wanda-50", True)
        assert d["difference"] == pytest.approx(des["wanda-50-en", task] - des["wanda-50", task])
        assert d["difference_ci"]["low"] <= d["difference"] <= d["difference_ci"]["high"]
        assert f"| {task} | wanda-50-en | wanda-50 |" in md
    # after the Models table, before the interval widths
    assert md.index("## Models") < md.index("### Paired DES differences") < md.index("### Interval widths")
    [skipped] = data["des_differences_skipped"]
    assert skipped.startswith("kd-later vs int8 (kd-later: ") and "does not exist yet" in skipped
    assert "Not compared: kd-later vs int8" in md


def test_compositions_are_built_from_their_base(demo, tiny):
    pruned = read_record(demo / "models" / "wanda-50")
    composed = read_record(demo / "models" / "wanda-50-int8")
    assert composed.source == str(demo / "models" / "wanda-50")
    assert composed.method == "int8" and composed.bytes_on_disk < pruned.bytes_on_disk
    # int8 keeps wanda's zeros: as sparse as its base.
    assert composed.nonzero_parameters == pytest.approx(pruned.nonzero_parameters, rel=0.02)
    assert composed.nonzero_parameters < 0.8 * composed.parameters
    of_student = read_record(demo / "models" / "student-int8")
    assert of_student.source == str(tiny["student"]) and of_student.method == "int8"


class Interrupted(RuntimeError):
    pass


def test_killed_run_resumes_without_redoing_items(tiny, tmp_path, monkeypatch):
    data_dir()
    cfg = load_study(write(demo_config(tiny, tmp_path / "out", keep=1), tmp_path / "study.yaml"))
    scored: list[tuple[str, str]] = []
    # The teacher's 10 (task, language) chunks and 3 of int8's finish (int8 is built by then: rows
    # are built and scored one at a time); the next one is "killed"
    budget = {"calls": 13}

    def counting(cls):
        real = cls.score

        def score(self, lm, items):
            if budget["calls"] == 0:
                raise Interrupted("killed mid-run")
            budget["calls"] -= 1
            rows = real(self, lm, items)
            scored.extend((str(lm.model.config.name_or_path), f"{self.name}/{r['id']}/{len(scored)}")
                          for r in rows)  # fmt: skip
            return rows

        monkeypatch.setattr(cls, "score", score)

    counting(FloresBPB)
    counting(XCOPA)
    with pytest.raises(Interrupted):
        run_study(cfg)
    first = len(scored)
    assert first > 0
    built = (tmp_path / "out" / "models" / "int8" / "model.safetensors").stat().st_mtime_ns
    budget["calls"] = 10**6
    report = run_study(cfg)
    second = len(scored) - first
    per_model = 6 * 8 + 4 * 10  # the demo profile: FLORES 6 x 8, XCOPA 4 x 10
    assert first + second == 2 * per_model  # every item scored exactly once over both runs
    assert (tmp_path / "out" / "models" / "int8" / "model.safetensors").stat().st_mtime_ns == built
    assert (report / "report.md").is_file()


@pytest.mark.parametrize("same_machine", [False, True])
def test_results_folder_resumes_on_a_new_machine(tiny, tmp_path, monkeypatch, same_machine):
    """`results:` keeps the item cache apart from the models: with the models folder gone, the
    study scores no item again. On a new machine it rebuilds the models to time them there; on
    the machine that timed them it builds and loads nothing, and leaves the results files as they are."""
    import shutil

    import aetheris.study.run as study_run

    data_dir()
    raw = demo_config(tiny, tmp_path / "out", keep=1)
    raw["results"] = str(tmp_path / "committed")
    cfg = load_study(write(raw, tmp_path / "study.yaml"))
    run_study(cfg)
    assert (tmp_path / "committed" / "report" / "report.md").is_file()
    assert not (tmp_path / "out" / "eval").exists() and (tmp_path / "out" / "models" / "int8").is_dir()
    files = {f: f.read_bytes() for f in (tmp_path / "committed" / "eval").glob("*.json")}
    shutil.rmtree(tmp_path / "out")
    scored = []
    for cls in (FloresBPB, XCOPA):
        real = cls.score
        monkeypatch.setattr(cls, "score", lambda self, lm, items, real=real: scored.extend(items) or real(self, lm, items))
    if not same_machine:
        monkeypatch.setattr(study_run, "machine", lambda: "another machine")
    report = run_study(cfg)
    assert scored == [] and (report / "report.md").is_file()
    assert (tmp_path / "out" / "models" / "int8" / "model.safetensors").is_file() != same_machine
    if same_machine:
        assert {f: f.read_bytes() for f in (tmp_path / "committed" / "eval").glob("*.json")} == files


def test_a_row_whose_model_changed_is_scored_again(tiny, tmp_path, monkeypatch):
    """Item caches are keyed by path: a compressed row given another spec, or a student folder
    distilled again in place, must not keep the old model's scores or timings."""
    import shutil

    data_dir()
    folder = tmp_path / "student"
    shutil.copytree(tiny["student"], folder)
    raw = demo_config(tiny, tmp_path / "out", [{"name": "student", "path": str(folder)}], keep=1)
    run_study(load_study(write(raw, tmp_path / "study.yaml")))
    scored = []
    for cls in (FloresBPB, XCOPA):
        real = cls.score
        monkeypatch.setattr(cls, "score", lambda self, lm, items, real=real: scored.extend(
            (str(lm.model.config.name_or_path), it["id"]) for it in items) or real(self, lm, items))  # fmt: skip
    run_study(load_study(write(raw, tmp_path / "study.yaml")))
    assert scored == []  # nothing changed: every item cached
    before = json.loads((tmp_path / "out" / "facts" / "int8.json").read_text())["bytes_on_disk"]
    student(seed=1).save_pretrained(folder)  # distilled again, same path
    raw["models"][0]["compress"] = {"method": "int4", "settings": {"group_size": 32}}  # the int8 row, respecified
    report = run_study(load_study(write(raw, tmp_path / "study.yaml")))
    per_model = 6 * 8 + 4 * 10  # the demo profile: FLORES 6 x 8, XCOPA 4 x 10
    assert len(scored) == 2 * per_model
    assert {m for m, _ in scored} == {str(folder), str(tmp_path / "out" / "models" / "int8")}
    after = json.loads((report.parent / "facts" / "int8.json").read_text())["bytes_on_disk"]  # re-measured
    assert after != before and after == read_record(tmp_path / "out" / "models" / "int8").bytes_on_disk


def test_scored_only_reports_a_stopped_study(tiny, tmp_path, monkeypatch):
    """`--scored-only` builds and scores nothing: the rows a stopped study finished are in the
    table, the row it was scoring is listed as not scored yet."""
    data_dir()
    path = write(demo_config(tiny, tmp_path / "out", keep=2), tmp_path / "study.yaml")
    cfg = load_study(path)
    real = FloresBPB.score

    def score(self, lm, items):  # the teacher and int8 finish; int4-g32 is stopped at once
        if "int4" in str(lm.model.config.name_or_path):
            raise Interrupted("stopped")
        return real(self, lm, items)

    def no_scoring(self, lm, items):
        raise AssertionError("--scored-only scored an item")

    monkeypatch.setattr(FloresBPB, "score", score)
    with pytest.raises(Interrupted):
        run_study(cfg)
    monkeypatch.setattr(FloresBPB, "score", no_scoring)
    monkeypatch.setattr(XCOPA, "score", no_scoring)
    result = CliRunner().invoke(app, ["study", str(path), "--scored-only"])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "int8" in table and "not scored yet" in table


def test_only_scores_the_named_rows(tiny, tmp_path, monkeypatch):
    """`--only` builds and scores the named row (and the teacher, cached here); a finished row is
    reported as it was, a compressed row respecified since its scores is not, and is not rebuilt."""
    data_dir()
    raw = demo_config(tiny, tmp_path / "out", keep=2)  # the teacher, int8, int4-g32
    run_study(load_study(write(raw, tmp_path / "study.yaml")))
    int4 = tmp_path / "out" / "models" / "int4-g32"
    before = read_record(int4).spec_key
    raw["models"][1]["compress"]["settings"]["group_size"] = 64
    raw["models"].append({"name": "student", "path": str(tiny["student"])})
    path = write(raw, tmp_path / "study.yaml")
    scored = []
    for cls in (FloresBPB, XCOPA):
        real = cls.score
        monkeypatch.setattr(cls, "score", lambda self, lm, items, real=real: scored.append(
            str(lm.model.config.name_or_path)) or real(self, lm, items))  # fmt: skip
    result = CliRunner().invoke(app, ["study", str(path), "--only", "student"])
    assert result.exit_code == 0, result.output
    assert set(scored) == {str(tiny["student"])}
    assert read_record(int4).spec_key == before  # not rebuilt
    rows = {m["name"]: m for m in json.loads((tmp_path / "out" / "report" / "results.json").read_text())["models"]}
    assert rows["int8"].get("missing") is None and rows["student"].get("missing") is None
    assert rows["int4-g32"]["missing"] == "not scored yet"


def test_rows_whose_folders_are_gone_are_reported_from_their_scores(tiny, tmp_path, monkeypatch):
    """A new machine has the committed results folder but not the weights a gone machine built:
    a student row scored there, and a compressed row of it, are reported from their scores (with
    `--only` another row, and with `--scored-only`), not dropped as missing."""
    import shutil

    data_dir()
    folder = tmp_path / "kd"
    shutil.copytree(tiny["student"], folder)
    raw = demo_config(tiny, tmp_path / "out", keep=1, extra=[
        {"name": "kd", "path": str(folder), "optional": True},
        {"name": "kd-int8", "of": "kd", "compress": {"method": "int8"}}])  # fmt: skip
    path = write(raw, tmp_path / "study.yaml")
    run_study(load_study(path))
    shutil.rmtree(folder)
    shutil.rmtree(tmp_path / "out" / "models" / "kd-int8")
    scored = []
    for cls in (FloresBPB, XCOPA):
        real = cls.score
        monkeypatch.setattr(cls, "score", lambda self, lm, items, real=real: scored.append(
            str(lm.model.config.name_or_path)) or real(self, lm, items))  # fmt: skip
    for args in (["--only", "int8"], ["--scored-only"]):
        result = CliRunner().invoke(app, ["study", str(path), *args])
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / "out" / "report" / "results.json").read_text())
        rows = {m["name"]: m for m in report["models"]}
        assert rows["kd"].get("missing") is None and rows["kd-int8"].get("missing") is None
        assert {"kd", "kd-int8"} <= set(report["students"])
    assert scored == []  # int8 and the teacher were cached; nothing gone was loaded
    assert not folder.exists()


def test_only_names_an_unknown_row(tiny, tmp_path):
    path = write(demo_config(tiny, tmp_path / "out", keep=1), tmp_path / "study.yaml")
    result = CliRunner().invoke(app, ["study", str(path), "--only", "int9"])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "--only" in result.output and "int9" in result.output
    assert "int8" in result.output  # the rows it could have named
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ({"method": "int9"}, ["models[0] (bad).compress.method", "int9", "int8"]),
        ({"method": "wanda", "settings": {"sparsity": 1.5}}, ["models[0] (bad).compress.settings", "sparsity"]),
        ({"method": "wanda", "settings": {"sparsty": 0.5}}, ["models[0] (bad).compress.settings", "sparsty"]),
        ({"method": "int4", "settings": {"group_size": 100}}, ["group_size", "100"]),
    ],
)
def test_bad_method_or_setting_fails_before_any_work(tiny, tmp_path, spec, names):
    cfg = demo_config(tiny, tmp_path / "out", [{"name": "bad", "compress": spec}], keep=0)
    result = CliRunner().invoke(app, ["study", str(write(cfg, tmp_path / "s.yaml"))])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    for text in names:
        assert text in result.output
    assert not (tmp_path / "out").exists()  # nothing was built or evaluated


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"profile": "fast"}, ["profile='fast'", "cpu-equity", "demo"]),
        ({"models": [{"name": "s", "path": "/no/such/student"}]}, ["models[0] (s).path", "optional: true"]),
        ({"models": [{"name": "q", "of": "p", "compress": {"method": "int8"}}]}, ["models[0] (q).of='p'"]),
        ({"models": [{"name": "q", "compress": {"method": "int8"}, "path": "x"}]}, ["models[0] (q): give exactly one"]),
        ({"tasks": []}, ["tasks", "Extra inputs"]),
        ({"compare": [{"a": "int8", "b": "int8"}]}, ["compare[0]", "'int8'", "two different rows"]),
        ({"compare": [{"a": "int8", "b": "wanda-50", "c": "x"}]}, ["compare[0].c", "Extra inputs"]),
    ],
)
def test_bad_config_keys_are_named(tiny, tmp_path, change, names):
    cfg = {**demo_config(tiny, tmp_path / "out"), **change}
    with pytest.raises(StudyConfigError) as err:
        load_study(write(cfg, tmp_path / "s.yaml"))
    for text in names:
        assert text in str(err.value)


def test_compare_with_an_unknown_row_fails_before_any_work(tiny, tmp_path):
    cfg = demo_config(tiny, tmp_path / "out")
    cfg["compare"] = [{"a": "wanda-5O", "b": "wanda-50"}]
    result = CliRunner().invoke(app, ["study", str(write(cfg, tmp_path / "s.yaml"))])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "compare[0].a='wanda-5O': expected the name of a row" in result.output
    assert not (tmp_path / "out").exists()  # nothing was built or evaluated


def test_profiles(tiny, tmp_path):
    cfg = load_study(write({**demo_config(tiny, tmp_path / "o"), "profile": "cpu-equity"}, tmp_path / "s.yaml"))
    langs = cfg.languages()
    assert set(langs) == {"flores_bpb", "xcopa"}  # no tool calling: the teacher is a base model
    assert len(langs["flores_bpb"]) == 69  # Tiny Aya's 70 but Nigerian Pidgin, which SIB-200 lacks
    assert langs["xcopa"] is None  # all 11
    tuned = demo_config(tiny, tmp_path / "o")
    tuned.update(profile="cpu-equity", teacher={"model": str(tiny["teacher"]), "instruction_tuned": True})
    assert "tools" in load_study(write(tuned, tmp_path / "t.yaml")).languages()
    assert {"demo", "cpu-equity"} <= set(PROFILES)


def test_shipped_configs_validate():
    root = Path(__file__).resolve().parents[1] / "configs"
    load_study(root / "study-demo.yaml")
    big = load_study(root / "study-gemma3-270m.yaml")
    assert len(big.models) + 1 >= 12 and big.profile == "cpu-equity"  # with the teacher
    methods = {m.method for m in big.models}
    assert {"int8", "int4", "magnitude", "wanda", "sparsegpt", "shortgpt", "vocab-trim", "student"} <= methods
    assert ("wanda-50-en", "wanda-50") in [(p.a, p.b) for p in big.compare]
