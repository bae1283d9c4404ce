"""Equity-aware KD (group DRO): the update, the excess-loss identity, training on a tiny teacher, resume.

Run as a script, this file is the training job the resume test starts in subprocesses:
    python tests/test_group_dro.py OUT --reweight loss|sampling [--resume] [--sleep S]
"""

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_teachers import tiny_model

from aetheris import AetherisConfig, AetherisForCausalLM
from aetheris.data.mixture import GroupedOrder, TaggedRows
from aetheris.distill.checkpoint import find_last_checkpoint
from aetheris.distill.config import ConfigError, TrainConfig, parse_config
from aetheris.distill.group_dro import GroupDRO, group_dro_hook, group_of
from aetheris.distill.kd import OnlineTeacher, held_out_row_kl, kd_objective, kd_step
from aetheris.distill.losses import KDObjective, TeacherLogits
from aetheris.distill.trainer import train
from aetheris.report.plots import group_weights

HERE = Path(__file__).resolve()
SRC = HERE.parents[1] / "src"
VOCAB, LENGTH = 256, 12


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- the update on its own


def test_kl_is_the_excess_loss_over_the_teacher():
    """KL(teacher ‖ student) per token = CE(teacher, student) − H(teacher), on the objective's own
    per-row sums: what makes group DRO on the KD loss DoReMi's excess-loss DRO, the teacher as reference."""
    torch.manual_seed(0)
    hidden, head = torch.randn(3, 7, 16), torch.randn(50, 16)
    t_logits = 3 * torch.randn(3, 7, 50)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[2, 4:] = 0
    for temperature in (1.0, 2.0):
        res = KDObjective(temperature=temperature, chunk_size=5)(
            hidden, head, TeacherLogits(t_logits), attention_mask=mask
        )
        p = F.softmax(t_logits / temperature, -1)
        log_q = F.log_softmax(hidden @ head.t() / temperature, -1)
        ce = -(p * log_q).sum(-1)  # the student's cross-entropy against the teacher's distribution
        entropy = -(p * p.log()).sum(-1)  # the teacher's own loss there
        keep = torch.zeros(3, 7, dtype=torch.bool)
        keep[:, :-1] = (mask[:, :-1] * mask[:, 1:]).bool()  # the positions the objective counts
        excess = ((ce - entropy) * keep).sum(1)
        assert torch.allclose(res.row_kl, excess, rtol=1e-5, atol=1e-5), temperature
        assert (res.row_kl > 0).all()


def test_q_moves_to_the_worse_group_and_the_floor_holds():
    dro = GroupDRO(["a", "b", "c"], eta=5.0, floor=0.3)
    for _ in range(50):
        dro.update(torch.tensor([10.0, 40.0, 10.0]), torch.tensor([10.0, 10.0, 10.0]))  # L = 1, 4, 1
    assert dro.q[1] > dro.q[0] and dro.q[0] == pytest.approx(dro.q[2])
    assert float(dro.q.min()) == pytest.approx(0.3 / 3) and float(dro.q.sum()) == pytest.approx(1.0)
    free = GroupDRO(["a", "b", "c"], eta=5.0, floor=0.0)
    for _ in range(50):
        free.update(torch.tensor([10.0, 40.0, 10.0]), torch.tensor([10.0, 10.0, 10.0]))
    assert float(free.q.min()) < 1e-6  # without the floor the same steps starve groups a and c


def test_one_step_is_the_exponentiated_gradient_step():
    dro = GroupDRO(["a", "b"], eta=0.5)
    dro.update(torch.tensor([2.0, 9.0]), torch.tensor([2.0, 3.0]))  # L = 1 and 3
    w = np.array([0.5 * math.exp(0.5 * 1), 0.5 * math.exp(0.5 * 3)])
    assert dro.q.numpy() == pytest.approx(w / w.sum(), rel=1e-12)


def test_a_group_that_never_appears_keeps_its_weight_and_an_absent_one_its_loss():
    dro = GroupDRO(["a", "b", "c", "d"], eta=0.2, floor=0.05, smoothing=0.5)
    dro.update(torch.tensor([4.0, 2.0, 3.0, 0.0]), torch.tensor([2.0, 2.0, 1.0, 0.0]))  # d never appears
    for _ in range(5):
        dro.update(torch.tensor([4.0, 2.0, 0.0, 0.0]), torch.tensor([2.0, 2.0, 0.0, 0.0]))  # c absent from now on
    assert float(dro.q[3]) == 0.25  # exactly its initial weight
    assert float(dro.loss[2]) == 3.0  # c competes at its last (smoothed) loss, and stays the heaviest
    assert dro.q[2] > dro.q[0] > dro.q[1]
    assert float(dro.q.sum()) == pytest.approx(1.0)
    assert "group_kl/d" not in dro.metrics() and dro.metrics()["q/d"] == 0.25


def test_row_weights_make_the_loss_the_q_weighted_sum_of_group_means():
    torch.manual_seed(0)
    hidden, head, t_logits = torch.randn(4, 6, 8), torch.randn(30, 8), 2 * torch.randn(4, 6, 30)
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[3, 2:] = 0  # a short row: group means are per token, not per row
    group = torch.tensor([0, 1, 0, 1])
    dro = GroupDRO(["a", "b"], eta=0.0)
    dro.q = torch.tensor([0.2, 0.8], dtype=torch.float64)
    obj = KDObjective(chunk_size=7)
    plain = obj(hidden, head, TeacherLogits(t_logits), attention_mask=mask)
    from aetheris.distill.group_dro import counted_tokens

    w = dro.row_weights(group, counted_tokens({"input_ids": torch.zeros(4, 6), "attention_mask": mask}))
    weighted = obj(hidden, head, TeacherLogits(t_logits), attention_mask=mask, row_weights=w)
    means = [plain.row_kl[group == g].sum() / plain.row_tokens[group == g].sum() for g in (0, 1)]
    assert float(weighted.loss) == pytest.approx(float(0.2 * means[0] + 0.8 * means[1]), rel=1e-5)


def test_sampling_draws_groups_by_q_and_processes_agree():
    groups = [0] * 30 + [1] * 10
    order = GroupedOrder(groups, 2, seed=3)
    order.set_probs([0.25, 0.75])
    picks = [order(o) for o in range(4000)]
    share_b = np.mean([groups[i] == 1 for i in picks])
    assert share_b == pytest.approx(0.75, abs=0.03)
    assert sorted(picks[:10]) != sorted(range(10))  # rows come from the pools, repeated in epochs
    # Two "processes" asking for alternate offsets (and skipping the other's) see the same rows.
    a, b = GroupedOrder(groups, 2, seed=3), GroupedOrder(groups, 2, seed=3)
    for o in (a, b):
        o.set_probs([0.25, 0.75])
    mine = {off: a(off) for off in range(0, 40, 2)} | {off: b(off) for off in range(1, 40, 2)}
    assert [mine[o] for o in range(40)] == picks[:40]


def test_the_data_prior_starts_q_at_the_row_shares_and_eta_tilts_it():
    """dro_prior data: q0 is each group's share of the rows, so at η = 0 sampling draws the groups as
    the rows hold them (uniform KD's proportions); the update multiplies that prior, as from 1/G."""
    langs = ["fr"] * 30 + ["de"] * 30 + ["fi"] * 10 + ["eu"] * 10  # Indo-European 3/4, Uralic and Basque 1/8
    hook = group_dro_hook(langs, "family", eta=0.0, floor=0.1, smoothing=0.0, reweight="sampling", seed=0,
                          prior="data")  # fmt: skip
    assert hook.dro.groups == ["Basque", "Indo-European", "Uralic"]
    assert hook.dro.q.tolist() == pytest.approx([0.125, 0.75, 0.125])
    picks = [hook.order(o) for o in range(4000)]
    assert np.mean([langs[i] in ("fr", "de") for i in picks]) == pytest.approx(0.75, abs=0.03)
    hook.dro.update(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([1.0, 1.0, 1.0]))
    assert hook.dro.q.tolist() == pytest.approx([0.125, 0.75, 0.125])  # η = 0: the prior stays
    tilted = GroupDRO(["a", "b"], eta=0.5, prior=[3, 1])
    tilted.update(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 1.0]))
    w = np.array([0.75 * math.exp(0.5), 0.25 * math.exp(1.5)])
    assert tilted.q.numpy() == pytest.approx(w / w.sum(), rel=1e-12)
    uniform = group_dro_hook(langs, "family", eta=0.0, floor=0.1, smoothing=0.0, reweight="loss", seed=0)
    assert uniform.dro.q.tolist() == pytest.approx([1 / 3] * 3)  # the paper's start, the default
    with pytest.raises(ValueError, match="one positive weight per group"):
        GroupDRO(["a", "b"], eta=0.1, prior=[1.0, 0.0])


def test_config_knobs_and_errors():
    base = {"teacher": {"name": "x"}, "data": {"train": ["embedded"], "seq_len": 8, "pack": "language"}, "output_dir": "o",
            "train": {s: {"steps": 1, "batch_size": 1, "lr": 1e-3} for s in ("align", "kd", "sft")}}  # fmt: skip
    cfg = parse_config({**base, "kd": {"weighting": "group_dro", "groups": "region", "reweight": "sampling",
                                       "dro_eta": 0.1, "dro_floor": 0.2, "dro_smoothing": 0.9}})  # fmt: skip
    assert (cfg.kd.weighting, cfg.kd.groups, cfg.kd.reweight) == ("group_dro", "region", "sampling")
    with pytest.raises(ConfigError, match="reweight: sampling needs weighting: group_dro"):
        parse_config({**base, "kd": {"reweight": "sampling"}})
    with pytest.raises(ConfigError, match="kd.dro_floor"):
        parse_config({**base, "kd": {"weighting": "group_dro", "dro_floor": 2}})
    # a row's group is its first document's: rows must be of one language for it to be their tokens' group
    with pytest.raises(ConfigError, match="group_dro needs data.pack: language"):
        parse_config({**base, "data": {**base["data"], "pack": "mixed"}, "kd": {"weighting": "group_dro"}})
    with pytest.raises(ConfigError, match="dro_signal: excess_ce needs weighting: group_dro"):
        parse_config({**base, "kd": {"dro_signal": "excess_ce"}})
    with pytest.raises(ConfigError, match="dro_prior: data needs weighting: group_dro"):
        parse_config({**base, "kd": {"dro_prior": "data"}})
    assert parse_config({**base, "kd": {"weighting": "group_dro", "dro_prior": "data"}}).kd.dro_prior == "data"
    assert group_of("ja", "family") == "Japonic" and group_of("sw", "region") == "Africa"
    assert group_of("zho", "language") == "zh-Hans"


class ByteTokenizer:
    """Token i is the character chr(i): ids below 128 are one UTF-8 byte, the rest two."""

    def decode(self, ids: list[int]) -> str:
        return "".join(map(chr, ids))


def test_excess_ce_signal_is_bits_per_byte_of_the_students_loss_over_the_teachers():
    """What the hook observes under dro_signal excess_ce, by hand: per group, Σ (CE_student −
    CE_teacher at the labels) / ln 2 over Σ UTF-8 bytes of the counted next tokens."""
    torch.manual_seed(0)
    ids = torch.cat([torch.randint(3, 100, (2, 6)), torch.randint(130, 256, (2, 6))])  # 1- and 2-byte tokens
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[1, 4:] = 0
    labels = ids.clone()
    labels[0, 2] = -100
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "group": torch.tensor([0, 0, 1, 1])}
    hidden, head, t_logits = torch.randn(4, 6, 8), torch.randn(VOCAB, 8), 2 * torch.randn(4, 6, VOCAB)
    res = KDObjective(teacher_ce=True, chunk_size=5)(hidden, head, TeacherLogits(t_logits), labels=labels,
                                                     attention_mask=mask)  # fmt: skip
    hook = group_dro_hook(["en", "en", "ja", "ja"], "family", eta=0.5, floor=0.0, smoothing=0.0, reweight="loss",
                          seed=0, signal="excess_ce", tokenizer=ByteTokenizer())  # fmt: skip
    hook.observe(batch, res)
    s_lp, t_lp = F.log_softmax(hidden @ head.t(), -1), F.log_softmax(t_logits, -1)
    excess, n_bytes = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for r in range(4):
        for t in range(5):
            if mask[r, t] and mask[r, t + 1] and labels[r, t + 1] != -100:
                y = ids[r, t + 1]
                excess[r // 2] += float(t_lp[r, t, y] - s_lp[r, t, y]) / math.log(2)
                n_bytes[r // 2] += 1 if y < 128 else 2
    assert n_bytes.tolist() == [4 + 3, 2 * 10]
    assert hook.dro.step_count.tolist() == n_bytes.tolist()
    assert torch.allclose(hook.dro.step_loss, excess, atol=1e-4)
    hook.dro.update()
    assert set(hook.dro.metrics()) == {"q/Indo-European", "q/Japonic", "group_excess_ce/Indo-European",
                                       "group_excess_ce/Japonic"}  # fmt: skip
    with pytest.raises(ValueError, match="needs the tokenizer"):
        group_dro_hook(["en"], "family", eta=0.5, floor=0.0, smoothing=0.0, reweight="loss", seed=0,
                       signal="excess_ce")  # fmt: skip
    without = KDObjective(chunk_size=5)(hidden, head, TeacherLogits(t_logits), labels=labels, attention_mask=mask)
    with pytest.raises(ValueError, match="no teacher CE"):
        hook.observe(batch, without)


# ---------------------------------------------------------------- training on a tiny teacher


def tiny_teacher() -> torch.nn.Module:
    teacher = tiny_model("llama", seed=1)
    with torch.no_grad():
        teacher.lm_head.weight.mul_(6)  # a random init is near uniform: sharpen it so KL has something to fit
    return teacher


def tiny_student(layout: str = "SMSM") -> AetherisForCausalLM:
    torch.manual_seed(0)
    return AetherisForCausalLM(AetherisConfig(
        vocab_size=VOCAB, hidden_size=48, layout=layout, num_attention_heads=6, num_key_value_heads=2,
        moe_intermediate_size=32, ssm_chunk_size=8,
    ))  # fmt: skip


def two_families(n_common: int = 28, n_rare: int = 4) -> tuple[list[dict], list[str]]:
    """A common "Latin" family: two token patterns over ids 3..99, easy to fit; a rare family in
    another script: random ids 130..255 in every row."""
    g = torch.Generator().manual_seed(5)
    patterns = torch.randint(3, 100, (2, LENGTH), generator=g)
    rows, langs = [], []
    for i in range(n_common + n_rare):
        common = i % 8 != 0 or i >= 8 * n_rare
        ids = patterns[i % 2].clone() if common else torch.randint(130, VOCAB, (LENGTH,), generator=g)
        rows.append({"input_ids": ids, "attention_mask": torch.ones(LENGTH, dtype=torch.long), "row_id": torch.tensor(i)})
        langs.append("en" if common else "ja")
    return rows, langs


def budget(**over) -> TrainConfig:
    base = {"steps": 30, "batch_size": 4, "grad_accum": 1, "lr": 3e-3, "warmup_steps": 0, "clip": 1.0,
            "checkpoint_every": 0, "log_every": 1, "seed": 7, "schedule": "constant"}  # fmt: skip
    return TrainConfig(**{**base, **over})


def run_kd(out: Path, weighting: str = "uniform", reweight: str = "loss", *, eta: float = 0.3, steps: int = 30,
           accum: int = 1, checkpoint_every: int = 0, resume: bool = False, sleep: float = 0.0,
           rows: tuple[list[dict], list[str]] | None = None, batch: int = 4, layout: str = "SMSM",
           signal: str = "kl") -> tuple[AetherisForCausalLM, list[dict], list[str]]:  # fmt: skip
    """The KD stage's recipe (pipeline.stage_kd) on the tiny teacher; returns the student and the data."""
    rows, langs = rows or two_families()
    teacher, student = OnlineTeacher(tiny_teacher()), tiny_student(layout)
    kd = {"chunk_size": 16, "weighting": weighting, "dro_signal": signal}
    objective = kd_objective(parse_config({
        "teacher": {"name": "x"}, "data": {"train": ["embedded"], "seq_len": 8, "pack": "language"}, "output_dir": "o",
        "kd": kd, "train": {s: {"steps": 1, "batch_size": 1, "lr": 1e-3} for s in ("align", "kd", "sft")},
    }).kd)  # fmt: skip
    hook, data = None, rows
    if weighting == "group_dro":
        hook = group_dro_hook(langs, "family", eta=eta, floor=0.1, smoothing=0.0, reweight=reweight, seed=7,
                              signal=signal, tokenizer=ByteTokenizer())  # fmt: skip
        data = TaggedRows(rows, group=hook.row_groups)

    def step_fn(model, batch):
        if sleep:
            time.sleep(sleep)
        res = kd_step(model, batch, teacher, objective, hook.row_weights(batch) if hook else None)
        if hook:
            hook.observe(batch, res)
        return {"loss": res.loss, "kl": res.kl}

    train(student, data, step_fn, budget(steps=steps, batch_size=batch, grad_accum=accum, checkpoint_every=checkpoint_every),
          out, resume=resume, order=hook.order if hook else None, hooks=[hook] if hook else [])  # fmt: skip
    return student, rows, langs


def records(out: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows}


def rare_kl(student, rows, langs) -> float:
    rare = [r for r, lang in zip(rows, langs) if lang == "ja"]
    rare = [{**r, "labels": r["input_ids"]} for r in rare]
    kl, n = held_out_row_kl(student, rare, OnlineTeacher(tiny_teacher()), KDObjective(chunk_size=16))
    return float(kl.sum() / n.sum())


def test_q_rises_for_the_worse_fit_family_and_its_loss_falls_faster(tmp_path):
    data = two_families()
    start = rare_kl(tiny_student(), *data)
    uniform = rare_kl(*run_kd(tmp_path / "uniform", rows=data))
    dro_student, *_ = run_kd(tmp_path / "dro", "group_dro", rows=data)
    dro = rare_kl(dro_student, *data)
    q = {s: r["q/Japonic"] for s, r in records(tmp_path / "dro").items()}
    assert q[30] > 0.6 and q[30] > q[5] > 0.5  # the rare script's weight rises ...
    assert records(tmp_path / "dro")[30]["group_kl/Japonic"] > records(tmp_path / "dro")[30]["group_kl/Indo-European"]
    assert start - dro > 1.3 * (start - uniform)  # ... and its KL falls faster than under uniform KD
    # Spending q as the rows' group probabilities instead (its rows repeat: 4 of the 32): the same.
    sampled = rare_kl(run_kd(tmp_path / "sampling", "group_dro", "sampling", rows=data)[0], *data)
    assert start - sampled > 1.3 * (start - uniform)
    assert records(tmp_path / "sampling")[30]["q/Japonic"] > 0.55
    assert (tmp_path / "dro" / "tensorboard").is_dir()
    png = group_weights(list(records(tmp_path / "dro").values()))  # the q-over-training plot
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    with pytest.raises(ValueError, match="no q/<group> metrics"):
        group_weights(list(records(tmp_path / "uniform").values()))


def test_excess_ce_signal_moves_q_by_each_familys_excess_bits_per_byte(tmp_path):
    """Training on the excess-CE signal: q follows the logged per-family excess (log q ratio = η ·
    the summed L̂ difference, no floor reached), and the loss stays the KD loss."""
    rows, langs = two_families()
    rows = [{**r, "labels": r["input_ids"]} for r in rows]
    run_kd(tmp_path / "excess", "group_dro", eta=0.3, steps=12, rows=(rows, langs), signal="excess_ce")
    rec = records(tmp_path / "excess")
    # A family not yet seen keeps its weight, and so does the ratio: sum over steps with both seen.
    gap = sum(r["group_excess_ce/Japonic"] - r["group_excess_ce/Indo-European"]
              for r in rec.values() if "group_excess_ce/Japonic" in r)  # fmt: skip
    last = rec[max(rec)]
    assert math.log(last["q/Japonic"] / last["q/Indo-European"]) == pytest.approx(0.3 * gap, rel=1e-6)
    assert abs(gap) > 0.1 and all(math.isfinite(r["loss"]) for r in rec.values())
    assert not any(k.startswith("group_kl/") for k in last)


def test_with_one_group_group_dro_is_uniform(tmp_path):
    rows, langs = two_families()
    langs = ["en"] * len(langs)  # one family
    run_kd(tmp_path / "uniform", steps=6, rows=(rows, langs))
    run_kd(tmp_path / "dro", "group_dro", eta=1.0, steps=6, rows=(rows, langs))
    a, b = records(tmp_path / "uniform"), records(tmp_path / "dro")
    assert [a[s]["loss"] for s in a] == pytest.approx([b[s]["loss"] for s in b], abs=1e-7)
    assert all(b[s]["q/Indo-European"] == 1.0 for s in b)


# ---------------------------------------------------------------- resume after SIGKILL


RESUME_RUN = {"steps": 10, "accum": 2, "checkpoint_every": 3}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--reweight", default="loss")
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--processes", type=int, default=0, help="the two-process test: 4 rows per step in all")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.processes:
        run_kd(Path(a.out), "group_dro", a.reweight, steps=6, batch=4 // a.processes, layout="SS")
        return
    run_kd(Path(a.out), "group_dro", a.reweight, resume=a.resume, sleep=a.sleep, **RESUME_RUN)


def _run(args: list[str], launcher: list[str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{HERE.parent}", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*(launcher or [sys.executable]), str(HERE), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out


def test_resume_after_sigkill_reproduces_losses_and_q(tmp_path):
    """Under sampling, which restores the most (q, the groups' losses, the sampler's position);
    loss weighting keeps the same GroupDRO state."""
    reweight = "sampling"
    full, killed = tmp_path / "full", tmp_path / "killed"
    victim = _run([str(killed), "--reweight", reweight, "--sleep", "0.2"])
    run_kd(full, "group_dro", reweight, **RESUME_RUN)  # the uninterrupted run, here while the victim starts
    deadline = time.time() + 200
    while find_last_checkpoint(killed) is None:  # the first checkpoint is at step 3
        assert victim.poll() is None, victim.communicate()[0]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert max(records(killed)) < 10, "the job finished before it was killed: the test proved nothing"
    _finish(_run([str(killed), "--reweight", reweight, "--resume"]))
    expected, got = records(full), records(killed)
    assert sorted(got) == list(range(1, 11))
    for step in expected:
        assert set(got[step]) == set(expected[step]), step
        for key in ("loss", "kl", *(k for k in expected[step] if k.startswith(("q/", "group_kl/")))):
            assert got[step][key] == pytest.approx(expected[step][key], abs=1e-6), (step, key)
    assert expected[10]["q/Japonic"] != expected[1]["q/Japonic"]  # q moved: restoring it mattered
    state = json.loads((find_last_checkpoint(killed) / "trainer_state.json").read_text())["hooks"]["group_dro"]
    assert state["dro"]["q"][1] == pytest.approx(expected[10]["q/Japonic"], abs=0)
    assert state["order"]["next"] == 10 * 8  # steps x global batch: every draw made, none twice


@pytest.mark.slow
def test_two_cpu_processes_draw_and_weigh_as_one(tmp_path):
    """Sampling: each process asks for its own offsets of the q-weighted draws, and q is updated
    from totals reduced over processes; both must match one process with the whole batch (an
    SSM-only student: the routers' balance loss is not linear in the rows)."""
    one, two = tmp_path / "one", tmp_path / "two"
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    launcher = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29519"]  # fmt: skip
    two_procs = _run([str(two), "--reweight", "sampling", "--processes", "2"], launcher)
    _finish(_run([str(one), "--reweight", "sampling", "--processes", "1"]))
    _finish(two_procs)
    a, b = records(one), records(two)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    assert a[1]["samples_seen"] == b[1]["samples_seen"] == 4
    for step in a:
        for key in ("loss", *(k for k in a[step] if k.startswith(("q/", "group_kl/")))):
            assert b[step][key] == pytest.approx(a[step][key], abs=1e-5), (step, key)
    assert a[6]["q/Japonic"] != 0.5


if __name__ == "__main__":
    main()
