"""`aetheris merge`: mergekit over Aetheris students (its own architecture definition) and teachers."""

import json

import pytest
import torch
import yaml
from compress_models import student, tokenizer
from safetensors.torch import load_file
from tiny_teachers import tiny_model
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from aetheris.cli import app
from aetheris.merge import merge, parse_merge_config

pytest.importorskip("mergekit")


def save(model, path):
    model.save_pretrained(path)
    tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    root = tmp_path_factory.mktemp("students")
    return [save(student(seed=i), root / f"s{i}") for i in range(3)]


def tensors(path):
    return load_file(path / "model.safetensors")


def run(tmp_path, name, **cfg):
    return merge(parse_merge_config(cfg), tmp_path / name)


def m(path, **params):
    return {"model": str(path), **params}


def logits(path, ids):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits


def test_the_definition_lists_each_blocks_tensors_from_the_layout(students):
    from mergekit.architecture import get_architecture_info
    from mergekit.config import MergeConfiguration
    from mergekit.options import MergeOptions
    from transformers import AutoConfig

    from aetheris.merge.architecture import register

    register(students[0])
    config = MergeConfiguration.model_validate({"merge_method": "linear", "models": [
        {"model": str(students[0]), "parameters": {"weight": 1.0}}]})  # fmt: skip
    arch = get_architecture_info(config, MergeOptions())
    assert arch.expected_model_type == "aetheris" and {"modeling.py", "configuration.py", "mixer.py"} <= set(arch.tagalong_files)
    module = arch.modules["default"].architecture
    cfg = AutoConfig.from_pretrained(students[0])
    layers = [{w.name.split(f"layers.{i}.")[1] for w in module.layer_weights(i, cfg)} for i in range(4)]
    ssm = {"norm.weight", "mixer.in_proj.weight", "mixer.conv1d.weight", "mixer.conv1d.bias", "mixer.dt_bias",
           "mixer.A_log", "mixer.D", "mixer.norm.weight", "mixer.out_proj.weight"}  # fmt: skip
    experts = {f"mixer.experts.{e}.{p}_proj.weight" for e in range(4) for p in ("gate", "up", "down")}
    assert cfg.layout == "SMAM"
    assert layers[0] == ssm
    assert layers[1] == layers[3] == {"norm.weight", "mixer.router.weight"} | experts
    assert layers[2] == {"norm.weight"} | {f"mixer.{p}_proj.weight" for p in "qkvo"}
    every = module.all_weights(cfg)
    assert not any(w.optional for w in every)  # a missing tensor is an error, never skipped
    assert {w.name for w in every} == set(tensors(students[0]))  # exactly what the folder holds
    assert [w.name for w in every if w.vocabulary_axis == 0] == ["model.embed_tokens.weight"]  # tied head


@pytest.mark.parametrize(
    "options",
    [dict(post_norm=True, qk_norm=True, tie_word_embeddings=False),  # Gemma's sandwich norms, an untied head
     dict(norm_type="layernorm", norm_bias=True, attention_bias=True, mlp_bias=True, lm_head_bias=True)],
)  # fmt: skip
def test_the_definition_follows_the_config_options(tmp_path, options):
    from transformers import AutoConfig

    from aetheris import AetherisConfig, AetherisForCausalLM
    from aetheris.merge.architecture import AetherisModuleArchitecture

    cfg = AetherisConfig(vocab_size=64, hidden_size=32, layout="AMSM", num_attention_heads=4, num_key_value_heads=2,
                         moe_intermediate_size=16, **options)  # fmt: skip
    AetherisForCausalLM(cfg).save_pretrained(tmp_path)
    weights = AetherisModuleArchitecture().all_weights(AutoConfig.from_pretrained(tmp_path))
    assert sorted(w.name for w in weights) == sorted(tensors(tmp_path))
    assert {w.name for w in weights if w.vocabulary_axis == 0} == {"model.embed_tokens.weight"} | {
        n for n in tensors(tmp_path) if n.startswith("lm_head.")}  # fmt: skip


def test_merging_a_model_with_itself_gives_the_model(students, tmp_path):
    ids = torch.tensor([[1, 40, 90, 7, 300, 12]])
    want = logits(students[0], ids)
    a = tensors(students[0])
    for name, cfg in {
        "linear": {"method": "linear", "models": [m(students[0], weight=0.5), m(students[0], weight=0.5)]},
        "slerp": {"method": "slerp", "base": str(students[0]), "models": [m(students[0])], "t": 0.5},
        "ties": {"method": "ties", "base": str(students[0]), "models": [m(students[0], density=0.5)]},
    }.items():
        out = run(tmp_path, name, **cfg)
        got = tensors(out)
        assert set(got) == set(a), name
        for k in a:
            torch.testing.assert_close(got[k], a[k], msg=f"{name}: {k}")
        torch.testing.assert_close(logits(out, ids), want)


def test_linear_half_and_half_is_the_parameter_average(students, tmp_path):
    out = run(tmp_path, "avg", method="linear", models=[m(students[0], weight=0.5), m(students[1], weight=0.5)])
    a, b, got = tensors(students[0]), tensors(students[1]), tensors(out)
    assert set(got) == set(a)
    for k in a:
        torch.testing.assert_close(got[k], 0.5 * a[k] + 0.5 * b[k])
    record = json.loads((out / "merge.json").read_text())
    assert record["method"] == "linear" and len(record["config"]["models"]) == 2


@pytest.mark.parametrize("method", ["ties", "dare_ties"])
def test_sparse_methods_at_density_1_with_one_model_are_task_arithmetic(students, tmp_path, method):
    base, tuned = students[0], students[1]
    common = {"base": str(base), "normalize": False}
    ta = tensors(run(tmp_path, "ta", method="task_arithmetic", models=[m(tuned, weight=0.7)], **common))
    sparse = tensors(run(tmp_path, method, method=method, models=[m(tuned, weight=0.7, density=1.0)], **common))
    b, t = tensors(base), tensors(tuned)
    for k in b:
        torch.testing.assert_close(ta[k], b[k] + 0.7 * (t[k] - b[k]))  # what task arithmetic is
        torch.testing.assert_close(sparse[k], ta[k], msg=k)
    # below density 1 they really sparsify: the merge differs from task arithmetic
    half = tensors(run(tmp_path, "half", method=method, models=[m(tuned, weight=0.7, density=0.5)], **common))
    assert any(not torch.allclose(half[k], ta[k]) for k in b)


def test_a_merge_of_two_students_generates_where_aetheris_is_absent(students, tmp_path):
    from test_remote_code import run_python  # the aetheris-blocked child interpreter

    out = run(tmp_path, "merged", method="slerp", base=str(students[0]), models=[m(students[1])], t=0.3)
    assert {"modeling.py", "configuration.py", "ssd.py", "moe.py"} <= {p.name for p in out.glob("*.py")}
    assert "AutoModelForCausalLM" in json.loads((out / "config.json").read_text())["auto_map"]
    ids = tokenizer()("Habari ya asubuhi", return_tensors="pt").input_ids
    here = AutoModelForCausalLM.from_pretrained(out).eval()
    gen = here.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert gen.shape == (1, ids.shape[1] + 6)
    # A program without aetheris loads the merged folder from the code it carries.
    printed = run_python(f"""
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True, dtype=torch.float32)
        out = model.generate(torch.tensor([{ids[0].tolist()}]), max_new_tokens=6, do_sample=False, pad_token_id=0)
        print(type(model).__module__.split(".")[0], out.shape[1])
    """, tmp_path)  # fmt: skip
    module, length = printed.split()
    assert module == "transformers_modules" and int(length) == ids.shape[1] + 6


def test_cli_merges_and_the_folder_evaluates(students, tmp_path):
    from eval_tiny import data_dir

    spec = {"method": "linear", "models": [m(students[1], weight=0.5), m(students[2], weight=0.5)]}
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "merged"
    res = CliRunner().invoke(app, ["merge", str(tmp_path / "merge.yaml"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["eval", str(out), "--tasks", "flores_bpb", "--langs", "sw,hi", "--limit", "2",
                                   "--data-dir", str(data_dir()), "--out", str(tmp_path / "eval")])  # fmt: skip
    assert res.exit_code == 0, res.output
    (result,) = (tmp_path / "eval").glob("*.json")
    scores = json.loads(result.read_text())["tasks"]["flores_bpb"]["languages"]
    assert set(scores) == {"sw", "hi"} and all(0 < s["score"] < 50 for s in scores.values())


def test_a_teacher_architecture_merges_too(tmp_path):
    a = save(tiny_model("llama", seed=0, vocab_size=len(tokenizer())), tmp_path / "a")
    b = save(tiny_model("llama", seed=1, vocab_size=len(tokenizer())), tmp_path / "b")
    out = run(tmp_path, "merged", method="linear", models=[m(a, weight=0.5), m(b, weight=0.5)])
    ta, tb, got = tensors(a), tensors(b), tensors(out)
    assert set(got) == set(ta) and "lm_head.weight" in got  # untied head merged like the rest
    for k in ta:
        torch.testing.assert_close(got[k], 0.5 * ta[k] + 0.5 * tb[k])
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "llama" and not list(out.glob("*.py"))
    ids = torch.tensor([[1, 50, 60]])
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape == (1, 6)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"method": "average", "models": ["S0"]}, "method: input should be 'linear', 'task_arithmetic'"),
        ({"method": "ties", "models": [{"model": "S0", "density": 0.5}]}, "method ties needs `base`"),
        ({"method": "linear", "models": [{"model": "S0", "density": 0.5}]}, "method linear takes no `density`"),
        ({"method": "slerp", "base": "S0", "models": [{"model": "S1"}]}, "method slerp takes `base`, exactly one"),
        ({"method": "slerp", "base": "S0", "models": [{"model": "S1", "weight": 2}], "t": 0.5}, "slerp takes no `weight`"),
        ({"method": "linear", "models": [{"model": "NOWHERE"}]}, "models.0.model: NOWHERE: no such model folder"),
        ({"method": "linear", "models": [{"model": "S0", "wieght": 1}]}, "models.0.wieght: unknown key"),
        ({"method": "ties", "base": "S0", "models": [{"model": "S1", "density": 1.5}]}, "models.0.density: input should be less"),
        ({"method": "linear", "models": [{"model": "S0"}, {"model": "OTHER"}]}, "does not match"),
    ],
)  # fmt: skip
def test_bad_config_is_one_line_and_exit_2(students, tmp_path, spec, expected):
    other = save(student(seed=0, layout="SMSM"), tmp_path / "other")  # another layout: tensors differ
    names = {"S0": str(students[0]), "S1": str(students[1]), "NOWHERE": str(tmp_path / "nowhere"), "OTHER": str(other)}
    text = yaml.safe_dump(spec)
    for key, value in names.items():
        text = text.replace(key, value)
    expected = expected.replace("NOWHERE", names["NOWHERE"])
    (tmp_path / "bad.yaml").write_text(text)
    res = CliRunner().invoke(app, ["merge", str(tmp_path / "bad.yaml"), "-o", str(tmp_path / "out")])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_the_shipped_region_merge_config_validates(students):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "configs" / "merge-region.yaml").read_text()
    spec = yaml.safe_load(text)
    assert spec["models"][1]["model"] == "runs/post-training/global/student"
    for entry, folder in zip(spec["models"], students):  # the runs' folders, here tiny students
        entry["model"] = str(folder)
    cfg = parse_merge_config(spec)
    assert cfg.method == "linear" and [x.weight for x in cfg.models] == [0.5, 0.5]
