"""`aetheris compress` end to end: folders that `aetheris eval` and the Auto classes load, and
bad input that fails with one line naming the key, exit code 2, before any work."""

import json
import math

import pytest
from compress_models import model, student, tokenizer
from eval_tiny import data_dir
from typer.testing import CliRunner

from aetheris.cli import app
from aetheris.compress import read_record, spec_key

FAST = ["--set", "calibration_rows=4", "--set", "calibration_seq_len=32"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for name, m in [("llama", model("llama")), ("student", student())]:
        m.save_pretrained(root / name)
        tokenizer().save_pretrained(root / name)
    return root


def _run(*args):
    return CliRunner().invoke(app, ["compress", *map(str, args)])


def test_int8_folder_is_smaller_and_aetheris_eval_scores_it(folders, tmp_path):
    result = _run(folders / "llama", "--method", "int8", "-o", tmp_path / "int8")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "int8" / "compression.json").read_text())
    assert record["schema"] == "aetheris.compression/1" and record["method"] == "int8"
    assert record["calibration"] is None  # weight-only rounding reads no text
    dense = sum(f.stat().st_size for f in (folders / "llama").glob("*.safetensors"))
    assert record["bytes_on_disk"] < 0.75 * dense
    assert record["bits_per_weight"] < 32 and record["parameters"] >= record["nonzero_parameters"] > 0
    assert read_record(tmp_path / "int8").spec_key == spec_key(str(folders / "llama"), "int8", {})
    evaluated = CliRunner().invoke(app, ["eval", str(tmp_path / "int8"), "--tasks", "flores_bpb", "--langs", "en,sw",
                                         "--limit", "2", "--data-dir", str(data_dir()), "--out", str(tmp_path / "res")])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    saved = json.loads(next((tmp_path / "res").glob("*.json")).read_text())
    assert all(math.isfinite(v["score"]) for v in saved["tasks"]["flores_bpb"]["languages"].values())


def test_int4_student_folder_evaluates_in_bfloat16(folders, tmp_path):
    result = _run(folders / "student", "--method", "int4", "--set", "group_size=32", "-o", tmp_path / "q")
    assert result.exit_code == 0, result.output
    assert read_record(tmp_path / "q").details["weight_bits"] == 4
    evaluated = CliRunner().invoke(app, ["eval", str(tmp_path / "q"), "--tasks", "flores_bpb", "--langs", "ta",
                                         "--limit", "2", "--dtype", "bfloat16", "--data-dir", str(data_dir()),
                                         "--out", str(tmp_path / "res")])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    saved = json.loads(next((tmp_path / "res").glob("*.json")).read_text())
    assert math.isfinite(saved["tasks"]["flores_bpb"]["languages"]["ta"]["score"])


def test_student_wanda_two_four_with_chosen_calibration_languages(folders, tmp_path):
    args = ["--method", "wanda", "--set", "structure=2:4", "--set", "calibration_langs=en,sw", *FAST]
    result = _run(folders / "student", *args, "-o", tmp_path / "w")
    assert result.exit_code == 0, result.output
    record = read_record(tmp_path / "w")
    assert record.settings["structure"] == "2:4" and record.calibration["languages"] == ["en", "sw"]
    assert record.calibration["count"] == 4 and len(record.calibration["hash"]) == 64
    assert record.nonzero_parameters < record.parameters


@pytest.mark.parametrize(
    ("name", "method", "dtype"), [("llama", "int8", "auto"), ("student", "int4", "bfloat16")]
)
def test_quantised_embeddings_folder_evaluates(folders, tmp_path, name, method, dtype):
    args = ["--method", method, "--set", "embeddings=true"]
    args += ["--set", "group_size=32"] if method == "int4" else []
    result = _run(folders / name, *args, "-o", tmp_path / "q")
    assert result.exit_code == 0, result.output
    assert read_record(tmp_path / "q").settings["embeddings"] is True
    evaluated = CliRunner().invoke(app, ["eval", str(tmp_path / "q"), "--tasks", "flores_bpb", "--langs", "sw",
                                         "--limit", "2", "--dtype", dtype, "--data-dir", str(data_dir()),
                                         "--out", str(tmp_path / "res")])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    saved = json.loads(next((tmp_path / "res").glob("*.json")).read_text())
    assert math.isfinite(saved["tasks"]["flores_bpb"]["languages"]["sw"]["score"])


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--method", "nope"], "method='nope'"),
        (["--method", "wanda", "--set", "sparsity=1.5"], "sparsity=1.5"),
        (["--method", "wanda", "--set", "bogus=1"], "bogus"),
        (["--method", "int4", "--set", "group_size=100"], "group_size=100"),
        (["--method", "int8", "--set", "embeddings=maybe"], "embeddings='maybe'"),
        (["--method", "sparsegpt", "--set", "structure=3:2"], "structure='3:2'"),
        (["--method", "wanda", "--set", "calibration_langs=xx"], "calibration_langs"),
        (["--method", "magnitude", "--set", "sparsity"], "--set 'sparsity'"),
    ],
)
def test_bad_method_or_setting_exits_2_naming_the_key(folders, tmp_path, args, named):
    result = _run("no/such/model", *args, "-o", tmp_path / "out")  # settings fail before the model loads
    assert result.exit_code == 2, result.output
    assert named in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "out").exists()
