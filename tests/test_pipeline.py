"""The whole recipe on a tiny teacher: init -> align -> kd -> sft -> a loadable student."""

import json

import pytest
import torch
from eval_tiny import save_embedded_teacher, tiny_tokenizer
from tiny_teachers import teacher_tensors, tiny_model, weight_rows
from transformers import AutoModelForCausalLM, LlamaForCausalLM
from typer.testing import CliRunner

from aetheris.cli import app
from aetheris.data.sources import embedded_corpus
from aetheris.distill.config import ConfigError, parse_config
from aetheris.distill.pipeline import run_stages
from aetheris.distill.topk_cache import CacheMismatchError
from aetheris.model import AetherisForCausalLM


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_embedded_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    """The tiny Gemma 3 of tiny_teachers (embedding scale, soft cap, QK-norm) with a tokenizer."""
    path = tmp_path_factory.mktemp("gemma3")
    tok = tiny_tokenizer([e.text for e in embedded_corpus()][:200], vocab_size=400)
    # seed 1: a random teacher made under the student's seed (0) would hold the student's own init
    tiny_model("gemma3", seed=1, vocab_size=len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def config(teacher_dir, out, top_k_cache=True, experts="split", init="teacher"):
    budget = {"steps": 4, "batch_size": 2, "lr": 1e-3, "checkpoint_every": 2, "log_every": 1}
    return parse_config({
        "teacher": {"name": str(teacher_dir)},
        "student": {"layout": "SMSM", "experts": experts, "init": init, "overrides": {"ssm_chunk_size": 16}},
        "data": {"train": ["embedded"], "eval": ["embedded"], "seq_len": 32},
        "align": {"calibration_samples": 4},
        "kd": {"top_k_cache": top_k_cache, "top_k": 8, "chunk_size": 16, "held_out_rows": 3, "cache_dtype": "float32"},
        "sft": {"max_length": 1024},
        "train": {"align": budget, "kd": budget, "sft": budget},
        "output_dir": str(out),
    })  # fmt: skip


def test_all_stages_produce_a_student_that_loads_and_generates(teacher_dir, tmp_path):
    final = run_stages(config(teacher_dir, tmp_path), "all")
    for stage in ("init", "align", "kd", "sft", "student"):
        assert (tmp_path / stage / "model.safetensors").exists(), stage
    student = AutoModelForCausalLM.from_pretrained(final)
    assert student.config.distillation["experts"] == "split"
    assert student.config.distillation["layer_map"] == [0, 1]
    ids = torch.tensor([[1, 5, 9, 12]])
    assert student.generate(ids, max_new_tokens=3, do_sample=False).shape == (1, 7)
    card = (final / "README.md").read_text()
    assert "held-out KL" in card and "teacher layer" in card
    assert (final / "tokenizer.json").exists() and (final / "chat_template.jinja").exists()
    align = json.loads((tmp_path / "align" / "stage.json").read_text())
    assert all(r["loss_after"] < r["loss_before"] for r in align["layers"] if r["kind"] == "S")
    assert all(r["loss_after"] <= r["loss_before"] for r in align["layers"])
    assert json.loads((tmp_path / "topk-cache" / "manifest.json").read_text())["dtype"] == "float32"  # kd.cache_dtype
    assert json.loads((tmp_path / "kd" / "stage.json").read_text())["held_out_rows"] == 3  # kd.held_out_rows
    # each stage checkpointed while it ran (checkpoint_every 2); once its folder exists they are gone
    assert (tmp_path / "runs" / "kd" / "metrics.jsonl").exists()
    assert not list((tmp_path / "runs").glob("**/checkpoints"))


def test_stage_checkpoints_are_kept_when_asked(teacher_dir, tmp_path):
    cfg = config(teacher_dir, tmp_path, top_k_cache=False).model_copy(update={"keep_stage_checkpoints": True})
    run_stages(cfg, "init")
    run_stages(cfg, "align")
    assert list((tmp_path / "runs" / "align").glob("**/checkpoints/step-*"))


def test_stages_run_one_at_a_time_and_resume(teacher_dir, tmp_path):
    cfg = config(teacher_dir, tmp_path, top_k_cache=False, experts="upcycle")
    with pytest.raises(FileNotFoundError, match="stage 'init' has not been run"):
        run_stages(cfg, "align")
    run_stages(cfg, "init")
    run_stages(cfg, "align")
    run_stages(cfg, "kd")
    def losses():
        rows = [json.loads(line) for line in (tmp_path / "runs" / "kd" / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"], r["kl"]) for r in rows if "loss" in r]

    kd_losses = losses()
    # Finished, so its checkpoints are gone: --resume runs the stage again, to the same losses (the
    # same ops on the same shapes, on this machine).
    run_stages(cfg, "kd", resume=True)
    assert losses()[:4] == kd_losses[:4] and len(kd_losses) >= 4


@pytest.mark.parametrize(("reweight", "signal", "prior"),
                         [("loss", "kl", "uniform"), ("sampling", "kl", "uniform"), ("loss", "excess_ce", "uniform"),
                          ("sampling", "excess_ce", "data")])  # fmt: skip
def test_kd_stage_with_group_dro_logs_q_per_family(teacher_dir, tmp_path, reweight, signal, prior):
    """The KD stage's equity-aware path end to end: rows tagged with their family, q per family in
    metrics.jsonl and the stage note, held-out KL per family (the top-k cache keyed on the same rows;
    under the excess-CE signal built with the teacher's label log-probs)."""
    cfg = config(teacher_dir, tmp_path)
    cfg.data = cfg.data.model_copy(update={"pack": "language"})
    cfg.kd = cfg.kd.model_copy(update={"weighting": "group_dro", "reweight": reweight, "dro_eta": 1.0,
                                       "dro_signal": signal, "dro_prior": prior})  # fmt: skip
    for stage in ("init", "align", "kd"):
        run_stages(cfg, stage)
    rows = [json.loads(line) for line in (tmp_path / "runs" / "kd" / "metrics.jsonl").read_text().splitlines()]
    note = json.loads((tmp_path / "kd" / "stage.json").read_text())
    q = note["group_dro"]["q"]
    assert len(q) > 1 and sum(q.values()) == pytest.approx(1.0) and note["group_dro"]["reweight"] == reweight
    assert {f"q/{g}" for g in q} <= set(rows[-1]) and rows[-1][f"q/{max(q, key=q.get)}"] == max(q.values())
    assert note["group_dro"]["signal"] == signal and any(k.startswith(f"group_{signal}/") for k in rows[-1])
    assert note["group_dro"]["prior"] == prior and note["group_dro"]["q0"].keys() == q.keys()
    if prior == "uniform":
        assert set(note["group_dro"]["q0"].values()) == {1 / len(q)}
    manifest = json.loads((tmp_path / "topk-cache" / "manifest.json").read_text())
    assert manifest["label_logprobs"] == (signal == "excess_ce")
    assert rows[0]["q/Indo-European"] != rows[-1]["q/Indo-European"]  # it moved
    assert note["held_out_kl_by_group_after"] and all(v > 0 for v in note["held_out_kl_by_group_after"].values())
    assert len(note["held_out_kl_by_group_after"]) > 1
    assert f"group DRO over family ({reweight}, eta 1.0): final q" in (tmp_path / "student" / "README.md").read_text()


def test_kd_reads_rows_built_on_demand(teacher_dir, tmp_path):
    """data.lazy_rows: the rows are built as the trainer reads them (Tiny Aya's budget would hold
    42 GB packed up front), carry their family for group DRO, and are the same in every run."""
    losses = []
    for out in (tmp_path / "a", tmp_path / "b"):
        cfg = config(teacher_dir, out, top_k_cache=False)
        cfg.data = cfg.data.model_copy(update={"lazy_rows": True, "pack": "language"})
        cfg.kd = cfg.kd.model_copy(update={"weighting": "group_dro", "reweight": "sampling", "dro_eta": 1.0})
        for stage in ("init", "align", "kd"):
            run_stages(cfg, stage)
        rows = [json.loads(line) for line in (out / "runs" / "kd" / "metrics.jsonl").read_text().splitlines()]
        losses.append([(r["loss"], r["kl"]) for r in rows if "loss" in r])
        note = json.loads((out / "kd" / "stage.json").read_text())
        assert note["tokens"] == 4 * 2 * 32 and len(note["group_dro"]["q"]) > 1
        assert rows[0]["q/Indo-European"] != rows[-1]["q/Indo-European"]
    assert len(losses[0]) == 4 and losses[0] == losses[1]


def test_lazy_rows_refuse_a_topk_cache():
    with pytest.raises(ConfigError, match="kd.top_k_cache needs data.lazy_rows: false"):
        parse_config({"teacher": {"name": "x"}, "data": {"train": ["embedded"], "seq_len": 8, "lazy_rows": True},
                      "kd": {"top_k_cache": True}, "output_dir": "o",
                      "train": {s: {"steps": 1, "batch_size": 1, "lr": 1e-3} for s in ("align", "kd", "sft")}})  # fmt: skip


def test_split_router_choice_reaches_the_student(teacher_dir, tmp_path):
    cfg = config(teacher_dir, tmp_path, top_k_cache=False)
    cfg.student = cfg.student.model_copy(update={"split_router": "output", "split_partition": "tokens"})
    run_stages(cfg, "init")
    note = json.loads((tmp_path / "init" / "stage.json").read_text())
    assert (note["split_router"], note["split_partition"]) == ("output", "tokens")
    student = AetherisForCausalLM.from_pretrained(tmp_path / "init")
    assert student.config.distillation["split_partition"] == "tokens"
    other = config(teacher_dir, tmp_path / "activation", top_k_cache=False)  # the default
    run_stages(other, "init")
    routers = [AetherisForCausalLM.from_pretrained(p / "init").model.layers[1].mixer.router.weight
               for p in (tmp_path, tmp_path / "activation")]  # fmt: skip
    assert not torch.allclose(*routers)  # another partition, another target


def test_cli_rejects_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: {name: x}\nkd: {temperature: hot}\n")
    res = CliRunner().invoke(app, ["distill", str(bad)])
    assert res.exit_code == 2 and "kd.temperature" in res.output


def test_kd_loss_trains_the_routers_balance_too(teacher_dir, tmp_path):
    """In training the KD loss carries the load-balancing and z-losses; the held-out KL does not."""
    from aetheris.distill.init import init_student, student_config
    from aetheris.distill.kd import OnlineTeacher, kd_objective, kd_step
    from aetheris.teacher import introspect

    cfg = config(teacher_dir, tmp_path)
    teacher = LlamaForCausalLM.from_pretrained(teacher_dir).eval()
    spec = introspect(teacher)
    student = init_student(spec, student_config(spec, layout="SMSM", experts="upcycle"))
    ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    online, objective = OnlineTeacher(teacher), kd_objective(cfg.kd)
    student.train()
    res = kd_step(student, batch, online, objective)
    out = student(input_ids=ids, output_hidden_states=True)
    c = student.config
    plain = objective(out.hidden_states[-1], student.lm_head.weight, online(batch), labels=ids,
                      attention_mask=batch["attention_mask"])  # fmt: skip
    router = c.router_aux_loss_coef * out.aux_loss + c.router_z_loss_coef * out.z_loss
    assert float(router) > 0
    torch.testing.assert_close(res.loss, plain.loss + router)
    student.eval()
    assert float(kd_step(student, batch, online, objective).loss) == pytest.approx(float(plain.loss), rel=1e-5)


def test_random_init_student_has_the_same_shapes_copies_nothing_and_distils(gemma_dir, tmp_path):
    by_teacher, random = tmp_path / "teacher", tmp_path / "random"
    run_stages(config(gemma_dir, by_teacher, top_k_cache=False), "init")
    cfg = config(gemma_dir, random, top_k_cache=False, init="random")
    for stage in ("init", "align", "kd"):
        final = run_stages(cfg, stage)
    note = json.loads((random / "init" / "stage.json").read_text())
    assert note["init"] == "random" and note["experts"] == "split"
    assert json.loads((by_teacher / "init" / "stage.json").read_text())["init"] == "teacher"
    assert {k: v for k, v in note.items() if k != "init"} == {
        k: v for k, v in json.loads((by_teacher / "init" / "stage.json").read_text()).items() if k != "init"
    }  # same layer map, parameters and active parameters
    configs = [json.loads((d / "init" / "config.json").read_text()) for d in (random, by_teacher)]
    assert [c["distillation"].pop("init") for c in configs] == ["random", "teacher"]
    assert configs[0] == configs[1]

    student = AetherisForCausalLM.from_pretrained(random / "init")
    copied = AetherisForCausalLM.from_pretrained(by_teacher / "init")
    assert {k: v.shape for k, v in student.state_dict().items()} == {
        k: v.shape for k, v in copied.state_dict().items()
    }
    teacher = AutoModelForCausalLM.from_pretrained(gemma_dir)
    assert not torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    rows = weight_rows(teacher_tensors(teacher))
    assert weight_rows(copied.parameters()) & rows and not weight_rows(student.parameters()) & rows

    kd = json.loads((random / "kd" / "stage.json").read_text())
    assert kd["held_out_kl_after"] < kd["held_out_kl_before"]  # it trains
    assert "held_out_kl_by_group_after" not in kd  # mixed rows (the default) have no group per row
    trained = AetherisForCausalLM.from_pretrained(random / "kd")
    assert not torch.equal(trained.model.embed_tokens.weight, student.model.embed_tokens.weight)
    assert trained.generate(torch.tensor([[1, 5, 9]]), max_new_tokens=3, do_sample=False).shape == (1, 6)
    assert "init: `random`" in (final / "README.md").read_text()
    assert "init: `teacher`" in (by_teacher / "student" / "README.md").read_text()


def test_runs_over_the_same_rows_share_one_topk_cache(teacher_dir, tmp_path):
    shared = tmp_path / "shared-cache"
    a = config(teacher_dir, tmp_path / "a")
    b = config(teacher_dir, tmp_path / "b", experts="upcycle", init="random")  # other student, same rows
    for cfg in (a, b):
        cfg.kd.cache_dir = shared
    for stage in ("init", "align", "kd"):
        run_stages(a, stage)
    stamps = {p.name: p.stat().st_mtime_ns for p in shared.iterdir()}
    for stage in ("init", "align", "kd"):
        run_stages(b, stage)
    assert {p.name: p.stat().st_mtime_ns for p in shared.iterdir()} == stamps  # reused, not rebuilt
    assert not (tmp_path / "b" / "topk-cache").exists()
    b.train.kd.seed = 1  # other rows: the cache's row ids would point at other text
    with pytest.raises(CacheMismatchError, match="rows_hash"):
        run_stages(b, "kd")


@pytest.mark.parametrize(("bos", "first"), [("auto", True), ("false", False)])
def test_rows_start_with_the_teachers_bos_unless_told_not_to(teacher_dir, tmp_path, bos, first):
    """data.bos: the stages' rows (calibration, KD, held-out) start with the teacher's BOS, as its
    own training and evaluation texts do; `false` gives the rows of runs made before."""
    from aetheris.distill.pipeline import Run

    cfg = config(teacher_dir, tmp_path, top_k_cache=False)
    cfg.data = cfg.data.model_copy(update={"bos": bos})
    run = Run(cfg)
    bos_id = run.teacher.tokenizer.bos_token_id
    rows = run.packed(cfg.data.train, 4, seed=0) + list(run.kd_rows(4, seed=0)[0])
    assert all((int(r["input_ids"][0]) == bos_id) is first for r in rows)


def test_kd_reads_its_own_data_while_align_keeps_the_runs(teacher_dir, tmp_path):
    """kd.data: KD's rows (and held-out rows) follow their own packing and length, here rows of one
    language for group DRO, while init and align keep the run's mixed 32-token calibration rows."""
    cfg = config(teacher_dir, tmp_path, top_k_cache=True)
    kd_data = cfg.data.model_copy(update={"pack": "language", "seq_len": 16})
    cfg.kd = cfg.kd.model_copy(update={"data": kd_data, "weighting": "group_dro", "dro_eta": 1.0})
    cfg = parse_config(cfg.model_dump(mode="json"))  # the validators see kd.data, not data
    assert cfg.data.pack == "mixed" and cfg.kd_data.pack == "language"
    for stage in ("init", "align", "kd"):
        run_stages(cfg, stage)
    note = json.loads((tmp_path / "kd" / "stage.json").read_text())
    assert note["tokens"] == 4 * 2 * 16 and len(note["held_out_kl_by_group_after"]) > 1
    assert json.loads((tmp_path / "topk-cache" / "manifest.json").read_text())["seq_len"] == 16
    with pytest.raises(ConfigError, match="group_dro needs kd.data.pack: language"):
        parse_config({**cfg.model_dump(mode="json"), "kd": {"weighting": "group_dro", "data": {
            **kd_data.model_dump(mode="json"), "pack": "mixed"}}})  # fmt: skip
