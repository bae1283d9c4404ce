"""A saved student loads where `aetheris` is never imported: plain transformers with
trust_remote_code, the lm-eval CLI and mergekit's Python API.

Each of those runs in a child process whose sitecustomize blocks `import aetheris`. The venv's
editable install would otherwise make the package importable from anywhere, so a load that
leaned on it (rather than on the code saved in the folder) would pass without proving anything.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from eval_tiny import tiny_tokenizer
from greedy import decided, greedy_with_margins
from safetensors.torch import load_file, save_file

from aetheris import AetherisConfig, AetherisForCausalLM

CODE_FILES = {"configuration.py", "modeling.py", "attention.py", "mixer.py", "moe.py", "ssd.py"}
LAYOUT = "SMAM"  # one of each block kind: SSM, MoE, attention

BLOCKER = """
import importlib.abc
import sys


class BlockAetheris(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "aetheris" or name.startswith("aetheris."):
            raise ModuleNotFoundError(f"aetheris is blocked in this process ({name})")
        return None


sys.meta_path.insert(0, BlockAetheris())
"""

TEXTS = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "paka alikaa juu ya mkeka",
    "mbwa alikimbia bustanini",
    "one two three four five six",
]


def child_env(tmp: Path, block: bool = True) -> dict[str, str]:
    """The environment of a fresh program: no src on PYTHONPATH, offline, its own module cache."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_MODULES_CACHE=str(tmp / "hf-modules"),
        HF_DATASETS_CACHE=str(tmp / "hf-datasets"),
        TOKENIZERS_PARALLELISM="false",
    )
    if block:
        site = tmp / "blocker"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
        env["PYTHONPATH"] = str(site)
    return env


def run_child(
    args: list[str], tmp: Path, block: bool = True, timeout: int = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=tmp, env=child_env(tmp, block), capture_output=True, text=True, timeout=timeout
    )


def run_python(script: str, tmp: Path) -> str:
    """Run `script` in a fresh, aetheris-blocked interpreter; its stdout (it must exit 0)."""
    proc = run_child([sys.executable, "-c", textwrap.dedent(script)], tmp)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def save_student(path: Path, tok, seed: int) -> AetherisForCausalLM:
    cfg = AetherisConfig(
        vocab_size=len(tok),
        hidden_size=32,
        layout=LAYOUT,
        num_attention_heads=4,
        num_key_value_heads=2,
        moe_intermediate_size=48,
        ssm_chunk_size=4,
        max_position_embeddings=512,
        initializer_range=0.3,  # peaked logits: no near-ties
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AetherisForCausalLM(cfg).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("remote")
    tok = tiny_tokenizer(TEXTS * 4, vocab_size=300)
    model = save_student(tmp / "student", tok, seed=0)
    return tmp / "student", model, tok


def test_the_folder_carries_its_code_and_auto_map(student):
    path, _, _ = student
    assert CODE_FILES <= {p.name for p in path.glob("*.py")}
    assert json.loads((path / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration.AetherisConfig",
        "AutoModel": "modeling.AetherisModel",
        "AutoModelForCausalLM": "modeling.AetherisForCausalLM",
    }
    # The saved modules reach each other relatively and import nothing of the package.
    for name in CODE_FILES:
        tree = ast.parse((path / name).read_text(encoding="utf-8"))
        absolute = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        absolute |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
        assert not {m for m in absolute if m.split(".")[0] == "aetheris"}, name


def test_import_aetheris_still_selects_the_packaged_classes(student):
    from transformers import AutoModel, AutoModelForCausalLM

    path, _, _ = student
    assert type(AutoModelForCausalLM.from_pretrained(path)) is AetherisForCausalLM
    assert type(AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)) is AetherisForCausalLM
    assert type(AutoModel.from_pretrained(path)).__module__ == "aetheris.model.modeling"


def test_the_blocker_is_what_keeps_aetheris_out(tmp_path):
    # Without the blocker the child finds the package (editable install): the proof is real.
    find = "import importlib.util; print(importlib.util.find_spec('aetheris').origin)"
    free = run_child([sys.executable, "-c", find], tmp_path, block=False)
    assert free.returncode == 0 and free.stdout.strip().endswith("__init__.py"), free.stderr[-2000:]
    blocked = run_child([sys.executable, "-c", find], tmp_path)
    assert blocked.returncode != 0 and "aetheris is blocked" in blocked.stderr


def test_transformers_loads_the_student_without_aetheris(student, tmp_path):
    path, model, tok = student
    ids = torch.randint(3, len(tok), (2, 12), generator=torch.Generator().manual_seed(0))
    save_file({"input_ids": ids}, tmp_path / "inputs.safetensors")
    out = run_python(
        f"""
        import sys, torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModel, AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(path)!r}, trust_remote_code=True, dtype=torch.float32)
        base = AutoModel.from_pretrained({str(path)!r}, trust_remote_code=True, dtype=torch.float32)
        ids = load_file("inputs.safetensors")["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits
            hidden = base(ids).last_hidden_state
        gen = model.generate(ids[:1, :5], max_new_tokens=8, do_sample=False, pad_token_id=0)
        model.save_pretrained("resaved")
        save_file({{"logits": logits, "hidden": hidden, "generated": gen}}, "outputs.safetensors")
        print(type(model).__module__, type(base).__name__, any(m.split(".")[0] == "aetheris" for m in sys.modules))
    """,
        tmp_path,
    )
    module, base_name, imported = out.split()
    assert module.startswith("transformers_modules.") and base_name == "AetherisModel"
    assert imported == "False"
    got = load_file(tmp_path / "outputs.safetensors")
    with torch.no_grad():
        want = model(ids, output_hidden_states=True)
    # Same weights, same code: default float32 tolerances (dtype-derived) are ample.
    torch.testing.assert_close(got["logits"], want.logits)
    torch.testing.assert_close(got["hidden"], want.hidden_states[-1])
    # Greedy tokens are equal only where no step is a near-tie; this seed's path has none.
    want_gen, margin = greedy_with_margins(model, ids[:1, :5], max_new_tokens=8, pad_token_id=0)
    assert decided(margin), f"greedy path has a near-tie (margin {margin}): pick another seed"
    assert got["generated"].shape == (1, 13) and torch.equal(got["generated"][0, 5:], want_gen)
    # A student loaded from its code saves complete again (e.g. after fine-tuning elsewhere).
    assert CODE_FILES <= {p.name for p in (tmp_path / "resaved").glob("*.py")}
    assert (
        "AutoModelForCausalLM" in json.loads((tmp_path / "resaved" / "config.json").read_text())["auto_map"]
    )


def write_lm_eval_tasks(tmp: Path) -> Path:
    """Two tasks over local JSON (the hub is unreachable): multiple choice and generation."""
    mc = [
        {"question": f"{t[:12]}", "choices": [t[12:], TEXTS[(i + 1) % len(TEXTS)][12:]], "label": 0}
        for i, t in enumerate(TEXTS)
    ]
    gen = [{"question": t[:10], "answer": t[10:]} for t in TEXTS]
    tasks = tmp / "tasks"
    tasks.mkdir()
    for name, rows in (("mc", mc), ("gen", gen)):
        (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    common = "dataset_path: json\ndataset_name: null\ntest_split: test\ndoc_to_text: question\n"
    (tasks / "remote_mc.yaml").write_text(
        f"task: aetheris_remote_mc\n{common}dataset_kwargs:\n  data_files:\n    test: {tmp / 'mc.jsonl'}\n"
        "output_type: multiple_choice\ndoc_to_choice: choices\ndoc_to_target: label\ntarget_delimiter: ' '\n"
        "metric_list:\n  - metric: acc\n",
        encoding="utf-8",
    )
    (tasks / "remote_gen.yaml").write_text(
        f"task: aetheris_remote_gen\n{common}dataset_kwargs:\n  data_files:\n    test: {tmp / 'gen.jsonl'}\n"
        "output_type: generate_until\ndoc_to_target: answer\n"
        "generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: 8\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n",
        encoding="utf-8",
    )
    return tasks


def in_process_loglikelihoods(model, tok, requests: list[tuple[str, str]]) -> list[float]:
    """lm-eval's own HF wrapper around the in-process student: the same tokenisation as the CLI's."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=1, device="cpu")
    inst = [Instance("loglikelihood", {}, req, i) for i, req in enumerate(requests)]
    return [ll for ll, _ in lm.loglikelihood(inst)]


@pytest.mark.slow  # ~1 minute on 2 shared cores, nearly all of it lm-eval starting up
def test_lm_eval_cli_scores_the_student_without_aetheris(student, tmp_path):
    pytest.importorskip("lm_eval")
    path, model, tok = student
    tasks = write_lm_eval_tasks(tmp_path)
    cli = Path(sys.executable).parent / "lm_eval"
    proc = run_child(
        [
            str(cli),
            "--model",
            "hf",
            "--model_args",
            f"pretrained={path},trust_remote_code=True",
            "--tasks",
            "aetheris_remote_mc,aetheris_remote_gen",
            "--include_path",
            str(tasks),
            "--output_path",
            str(tmp_path / "out"),
            "--log_samples",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "aetheris_remote_mc" in proc.stdout and "aetheris_remote_gen" in proc.stdout
    (result,) = (tmp_path / "out").rglob("results_*.json")
    scores = json.loads(result.read_text())["results"]
    assert 0.0 <= scores["aetheris_remote_mc"]["acc,none"] <= 1.0
    assert 0.0 <= scores["aetheris_remote_gen"]["exact_match,none"] <= 1.0
    (mc_samples,) = (tmp_path / "out").rglob("samples_aetheris_remote_mc_*.jsonl")
    samples = [json.loads(line) for line in mc_samples.read_text().splitlines()]
    assert len(samples) == len(TEXTS)
    # The child's log-likelihoods are the in-process student's, request by request.
    requests = [(a["arg_0"], a["arg_1"]) for s in samples for a in s["arguments"].values()]
    theirs = [float(r[0][0]) for s in samples for r in s["resps"]]
    ours = in_process_loglikelihoods(model, tok, requests)
    torch.testing.assert_close(
        torch.tensor(theirs, dtype=torch.float64),
        torch.tensor(ours, dtype=torch.float64),
        rtol=1e-4,
        atol=1e-4,
    )  # float32 sums of ~10 log-probs, logged as decimals


def test_mergekit_merges_students_without_aetheris(student, tmp_path):
    pytest.importorskip("mergekit")
    path, _, tok = student
    other = tmp_path / "other"
    save_student(other, tok, seed=1)
    out = run_python(
        f"""
        import json, sys
        from mergekit.architecture import get_architecture_info
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions
        cfg = MergeConfiguration.model_validate({{
            "merge_method": "linear", "dtype": "float32",
            "models": [{{"model": {str(path)!r}, "parameters": {{"weight": 0.5}}}},
                       {{"model": {str(other)!r}, "parameters": {{"weight": 0.5}}}}],
        }})
        options = MergeOptions(trust_remote_code=True, copy_tokenizer=True)
        arch = get_architecture_info(cfg, options)
        module = arch.modules["default"].architecture.definition
        run_merge(cfg, "merged", options=options)
        print(json.dumps({{"layers": module.override_num_layers,
                           "names": [w.name for w in module.pre_weights + module.layer_templates.weights],
                           "aetheris": any(m.split(".")[0] == "aetheris" for m in sys.modules)}}))
    """,
        tmp_path,
    )
    info = json.loads(out.splitlines()[-1])
    assert info["layers"] == len(LAYOUT) and not info["aetheris"]
    a, b = load_file(path / "model.safetensors"), load_file(other / "model.safetensors")
    # mergekit inferred the architecture from the tensor names: every tensor has a template.
    templated = {n.replace("${layer_index}", str(i)) for n in info["names"] for i in range(len(LAYOUT))}
    assert set(a) <= templated
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    assert set(merged) == set(a)
    for name in a:
        torch.testing.assert_close(merged[name], 0.5 * a[name] + 0.5 * b[name])
    # The merged folder is a student again (mergekit writes the config, not the modeling code).
    student_again = AetherisForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["model_type"] == "aetheris"
    with torch.no_grad():
        assert torch.isfinite(student_again(torch.tensor([[1, 5, 9, 11]])).logits).all()


def test_the_pipeline_writes_students_that_carry_their_code(student, tmp_path):
    from tiny_teachers import tiny_model

    import aetheris.model
    from aetheris.distill.config import parse_config
    from aetheris.distill.pipeline import run_stages

    _, _, tok = student
    tiny_model("llama", vocab_size=len(tok)).save_pretrained(tmp_path / "teacher")
    tok.save_pretrained(tmp_path / "teacher")
    budget = {"steps": 1, "batch_size": 1, "lr": 1e-3}  # required keys; init trains nothing
    cfg = parse_config({
        "teacher": {"name": str(tmp_path / "teacher")},
        "student": {"layout": "SMSM", "experts": "upcycle"},
        "data": {"train": ["embedded"], "eval": ["embedded"], "seq_len": 16},
        "train": {"align": budget, "kd": budget, "sft": budget},
        "output_dir": str(tmp_path / "run"),
    })  # fmt: skip
    final = run_stages(cfg, "init")
    package = Path(aetheris.model.__file__).parent
    for folder in (tmp_path / "run" / "init", final):
        assert set(json.loads((folder / "config.json").read_text())["auto_map"]) == {
            "AutoConfig", "AutoModel", "AutoModelForCausalLM"
        }  # fmt: skip
        for name in CODE_FILES:  # today's code, not a stale copy
            assert (folder / name).read_bytes() == (package / name).read_bytes(), (folder, name)
