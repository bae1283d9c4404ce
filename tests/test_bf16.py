"""bf16 compute: KD in bf16 tracks fp32, resumes exactly, eval bits/byte stay close, frozen head.

bf16 is forced (True) where a test needs it: autocast runs on every CPU, natively or emulated, so
these pass on machines without avx512_bf16/AMX too. Tolerances come from bf16's precision
(eps = 2^-8), never from one CPU's rounding.

Run as a script, this file is the bf16 training job the resume test starts and kills:
    python tests/test_bf16.py OUT [--resume] [--sleep S]
"""

import argparse
import copy
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from aetheris import AetherisConfig, AetherisForCausalLM
from aetheris.distill.checkpoint import find_last_checkpoint
from aetheris.distill.config import ConfigError, KDConfig, TrainConfig, parse_config
from aetheris.distill.kd import CachedTeacher, OnlineTeacher, kd_parameters, kd_step
from aetheris.distill.losses import KDObjective, TeacherTopK
from aetheris.distill.topk_cache import TopKCache, build_topk_cache
from aetheris.distill.trainer import train
from aetheris.eval.lm import HFLM
from aetheris.eval.tasks.flores import FloresBPB

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from eval_tiny import data_dir, save_tiny_model, tiny_llama, tiny_tokenizer, training_text  # noqa: E402
from test_distill_trainer import one_thread  # noqa: E402, F401 - autouse: one thread, one reduction order
from tiny_teachers import tiny_model  # noqa: E402

BF16_EPS = 2.0**-8
VOCAB, LENGTH = 256, 16


def tiny_student() -> AetherisForCausalLM:
    torch.manual_seed(0)
    return AetherisForCausalLM(AetherisConfig(
        vocab_size=VOCAB, hidden_size=64, layout="SMSM", num_attention_heads=4, num_key_value_heads=2,
        moe_intermediate_size=32, ssm_chunk_size=8,
    ))  # fmt: skip


class Rows(torch.utils.data.Dataset):
    def __init__(self, n: int = 16) -> None:
        self.ids = torch.randint(3, VOCAB, (n, LENGTH), generator=torch.Generator().manual_seed(5))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(LENGTH, dtype=torch.long),
                "row_id": torch.tensor(i)}  # fmt: skip


def teacher_fn(form: str, cache_dir: Path | None = None):
    model = tiny_model("llama", seed=1)  # untied head
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # a random init is near uniform: sharpen it, so that KD has work
    online = OnlineTeacher(model)
    if form == "online":
        return online
    if form == "cache":  # the pipeline's float16 top-k cache, read under autocast
        key = dict(teacher_id="tiny", k=16, temperature=1.0, seq_len=LENGTH, tokenizer_hash="-")
        rows = Rows(2)
        batches = ({"input_ids": r["input_ids"][None], "attention_mask": r["attention_mask"][None],
                    "row_ids": r["row_id"][None]} for r in (rows[i] for i in range(len(rows))))  # fmt: skip
        build_topk_cache(model, batches, cache_dir, total_rows=len(rows), dtype=torch.float16, **key)
        return CachedTeacher(TopKCache(cache_dir, **key))

    def topk(batch):  # the cache's form (softened top-k log-probs), made here instead of on disk
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            logits = online.model(input_ids=batch["input_ids"]).logits.float()
        return TeacherTopK(*F.log_softmax(logits, -1).topk(16, -1))

    return topk


def kd_step_fn(teacher, seen: list | None = None):
    objective = KDObjective(temperature=1.0, chunk_size=8)

    def step_fn(model, batch):
        if seen is not None:
            seen.append(torch.is_autocast_enabled("cpu"))
        res = kd_step(model, batch, teacher, objective)
        return {"loss": res.loss, "kl": res.kl}

    return step_fn


def cfg(**over) -> TrainConfig:
    base = {"steps": 6, "batch_size": 2, "lr": 3e-3, "warmup_steps": 0, "checkpoint_every": 0, "log_every": 1,
            "seed": 3}  # fmt: skip
    return TrainConfig(**{**base, **over})


def metric(out: Path, key: str = "loss") -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows}


@pytest.mark.parametrize("form", ["online", "topk", "cache"])
def test_kd_steps_in_bf16_track_fp32(tmp_path, form):
    teacher = teacher_fn(form, tmp_path / "cache")
    seen: list[bool] = []
    fp32, bf16 = tiny_student(), tiny_student()
    # Two rows, batch 2: every step sees the same batch, so the losses fall step by step.
    train(fp32, Rows(2), kd_step_fn(teacher), cfg(bf16=False), tmp_path / "fp32")
    train(bf16, Rows(2), kd_step_fn(teacher, seen), cfg(bf16=True), tmp_path / "bf16")
    a, b = metric(tmp_path / "fp32"), metric(tmp_path / "bf16")
    assert all(seen) and len(seen) == 6
    assert all(p.dtype == torch.float32 for p in bf16.parameters())  # master weights stay fp32
    assert b[6] < 0.85 * b[1]  # bf16 training learns (3.40 -> 2.60 here)
    # Each product rounds its inputs to 8 significant bits; a loss is a mean over many of them, so
    # its error stays within a few eps relative, also after 6 updates with these small steps.
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=4 * BF16_EPS), (step, a, b)
    assert b != a  # bf16 really ran: not one loss came out bit-identical to fp32's


def test_the_kd_losses_stay_fp32_under_autocast():
    """The chunk's logits, softmax and KL are fp32; d/dh comes back in the hidden states' dtype."""
    torch.manual_seed(2)
    h = torch.randn(2, 8, 64, requires_grad=True)
    head = torch.randn(VOCAB, 64, requires_grad=True)
    t = F.log_softmax(torch.randn(2, 8, VOCAB) * 3, -1).topk(8, -1)
    ref = KDObjective(chunk_size=4)(h, head, TeacherTopK(*t))
    ref_grads = torch.autograd.grad(ref.loss, (h, head))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = KDObjective(chunk_size=4)(h, head, TeacherTopK(*t))
    grads = torch.autograd.grad(out.loss, (h, head))
    assert out.loss.dtype == out.kl.dtype == torch.float32
    assert [g.dtype for g in grads] == [torch.float32, torch.float32]
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=4 * BF16_EPS)
    for g, r in zip(grads, ref_grads, strict=True):  # a product of bf16-rounded factors: ~2 eps each
        assert torch.allclose(g, r, rtol=8 * BF16_EPS, atol=8 * BF16_EPS * r.abs().max().item())


def _job(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(HERE), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--sleep", type=float, default=0.0)
    a = p.parse_args()
    torch.set_num_threads(1)
    step_fn = kd_step_fn(teacher_fn("online"))

    def slow(model, batch):
        time.sleep(a.sleep)
        return step_fn(model, batch)

    train(tiny_student(), Rows(), slow, cfg(steps=8, checkpoint_every=3, bf16=True), a.out, resume=a.resume)


def test_bf16_resume_after_sigkill_reproduces_the_losses(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    ref = _job([str(full)])
    victim = _job([str(killed), "--sleep", "0.2"])
    deadline = time.time() + 120
    while find_last_checkpoint(killed) is None:
        assert victim.poll() is None, victim.communicate()[0]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert max(metric(killed)) < 8, "the job finished before it was killed: the test proved nothing"
    for proc in (ref, _job([str(killed), "--resume"])):
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out
    expected, got = metric(full), metric(killed)
    assert sorted(got) == list(range(1, 9))
    # Same machine, same shapes, one thread: the bf16 kernels are deterministic, so resuming is exact.
    assert all(got[s] == pytest.approx(expected[s], abs=1e-6) for s in expected), (expected, got)


def test_freeze_embeddings_leaves_the_head_unchanged_and_trains_the_rest(tmp_path):
    student = tiny_student()
    assert student.lm_head.weight is student.get_input_embeddings().weight  # tied
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    params = kd_parameters(student, KDConfig(freeze_embeddings=True))
    assert kd_parameters(student, KDConfig()) is None
    train(student, Rows(), kd_step_fn(teacher_fn("online")), cfg(steps=3, bf16=True), tmp_path, parameters=params)
    changed = {n for n, p in student.named_parameters() if not torch.equal(p, before[n])}
    assert torch.equal(student.lm_head.weight, before["model.embed_tokens.weight"])
    assert "model.embed_tokens.weight" not in changed and len(changed) >= len(before) - 3
    assert metric(tmp_path)[3] < metric(tmp_path)[1]


class _Products(torch.overrides.TorchFunctionMode):
    """Counts the matrix products called while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if getattr(func, "__name__", "") in ("__matmul__", "matmul", "mm", "addmm_", "addmm"):
            self.n += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("autocast", [False, True])
def test_a_frozen_head_skips_the_head_gradient_product(autocast):
    torch.manual_seed(4)
    h = torch.randn(1, 17, 64, requires_grad=True)
    t = TeacherTopK(*F.log_softmax(torch.randn(1, 17, VOCAB), -1).topk(8, -1))
    counts = []
    for head in (torch.randn(VOCAB, 64, requires_grad=True), torch.randn(VOCAB, 64)):
        with _Products() as mode, torch.autocast("cpu", enabled=autocast):
            out = KDObjective(chunk_size=8)(h, head, t)  # 16 counted positions: 2 chunks
        counts.append(mode.n)
        assert out.loss.requires_grad
    assert counts == [6, 4]  # logits, d/dh, d/dhead per chunk; without the last when the head is frozen


def test_auto_turns_bf16_on_where_the_hardware_has_it_and_logs_why(tmp_path, monkeypatch, caplog):
    import aetheris.precision as precision

    for native in (True, False):
        monkeypatch.setattr(precision, "bf16_support", lambda device, n=native: (n, f"flags say {n}"))
        seen: list[bool] = []
        with caplog.at_level(logging.INFO):
            train(tiny_student(), Rows(4), kd_step_fn(teacher_fn("online"), seen), cfg(steps=1, bf16="auto"),
                  tmp_path / str(native), stage="kd")  # fmt: skip
        assert seen == [native]
        assert f"kd: bf16 {'on' if native else 'off'} (auto: flags say {native})" in caplog.text


def test_config_bf16_takes_auto_true_false_and_rejects_the_rest():
    run = {"teacher": {"name": "t"}, "data": {"train": ["embedded"], "seq_len": 8}, "output_dir": "o",
           "train": {s: {"steps": 1, "batch_size": 1, "lr": 1e-3} for s in ("align", "kd", "sft")}}  # fmt: skip
    assert parse_config(run).train.kd.bf16 is False  # existing configs keep their fp32 numbers
    for value in ("auto", True, False):
        run["train"]["kd"]["bf16"] = value
        assert parse_config(run).train.kd.bf16 == value
    run["train"]["kd"]["bf16"] = "sometimes"
    with pytest.raises(ConfigError, match=r"train\.kd\.bf16"):
        parse_config(run, "run.yaml")


def _bpb(lm: HFLM, items: list) -> float:
    rows = FloresBPB().score(lm, items)
    return sum(r["bits"] for r in rows) / sum(r["bytes"] for r in rows)


@pytest.mark.parametrize("arch", ["llama", "aetheris"])
def test_bf16_eval_bits_per_byte_stay_within_bf16_precision_of_fp32(arch):
    root = data_dir()
    tok = tiny_tokenizer(training_text(root))
    if arch == "llama":
        model = tiny_llama(tok)
    else:
        torch.manual_seed(0)
        model = AetherisForCausalLM(AetherisConfig(
            vocab_size=len(tok), hidden_size=64, layout="SMSM", num_attention_heads=4, num_key_value_heads=2,
            moe_intermediate_size=32, ssm_chunk_size=8, initializer_range=0.3,
        )).eval()  # fmt: skip
    items = FloresBPB().load("sw", root, 8)
    fp32 = _bpb(HFLM(model, tok, batch_size=4), items)
    bf16 = _bpb(HFLM(copy.deepcopy(model).to(torch.bfloat16), tok, batch_size=4), items)
    # bf16 logits carry ~eps relative error each; the fp32 log-softmax and the mean over a few
    # thousand bytes keep bits/byte within a few eps of fp32.
    assert bf16 == pytest.approx(fp32, rel=4 * BF16_EPS) and bf16 != fp32, (fp32, bf16)


@pytest.mark.parametrize("native", [True, False])
def test_eval_dtype_native_is_bf16_only_where_the_hardware_has_it(tmp_path, monkeypatch, native):
    import aetheris.precision as precision

    monkeypatch.setattr(precision, "bf16_support", lambda device: (native, "test"))
    path = save_tiny_model(tmp_path / "m", data_dir())
    lm = HFLM.load(str(path), dtype="native")
    assert next(lm.model.parameters()).dtype == (torch.bfloat16 if native else torch.float32)
    assert len(lm.generate(["Habari"], stop=[], max_new_tokens=2)) == 1  # generation runs in it too


if __name__ == "__main__":
    main()
