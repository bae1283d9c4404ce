"""The training loop: exact resume after SIGKILL, NaN stop, multi-process = one process, accumulation.

Run as a script, this file is the training job the tests start in subprocesses:
    python tests/test_distill_trainer.py OUT --steps 12 --batch 2 --accum 2 [--resume] [--sleep S]
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
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from aetheris import AetherisConfig, AetherisForCausalLM
from aetheris.distill import metrics as metrics_module
from aetheris.distill.checkpoint import find_last_checkpoint, load_model_state
from aetheris.distill.config import TrainConfig
from aetheris.distill.trainer import NonFiniteLossError, train

HERE = Path(__file__).resolve()
SRC = HERE.parents[1] / "src"


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny matrices on a shared 2-core machine: extra threads only spin against each other.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_student() -> AetherisForCausalLM:
    torch.manual_seed(0)
    return AetherisForCausalLM(AetherisConfig(
        vocab_size=97, hidden_size=48, layout="SMSM", num_attention_heads=6, num_key_value_heads=2,
        moe_intermediate_size=32, ssm_chunk_size=8,
    ))  # fmt: skip


class Synthetic(torch.utils.data.Dataset):
    """40 fixed random sequences of 8 tokens (no padding: every sample weighs the same)."""

    def __init__(self, n: int = 40, length: int = 8) -> None:
        self.ids = torch.randint(0, 97, (n, length), generator=torch.Generator().manual_seed(123))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i]}


def make_step_fn(sleep: float = 0.0, nan_at: int | None = None, accum: int = 1):
    calls = {"n": 0}

    def step_fn(model, batch):
        # Plain next-token CE (linear in samples, unlike the router's balance loss), so that splitting
        # a global batch across processes or micro-batches must not change it.
        calls["n"] += 1
        if sleep:
            time.sleep(sleep)
        ids = batch["input_ids"]
        logits = model(input_ids=ids, use_cache=False).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        if nan_at is not None and (calls["n"] - 1) // accum + 1 == nan_at:
            loss = loss * float("nan")
        return {"loss": loss, "tokens": float(ids.numel())}

    return step_fn


def cfg(**over) -> TrainConfig:
    base = {"steps": 12, "batch_size": 2, "grad_accum": 2, "lr": 3e-3, "warmup_steps": 2, "clip": 1.0,
            "weight_decay": 0.01, "checkpoint_every": 4, "log_every": 1, "seed": 7}
    return TrainConfig(**{**base, **over})


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    assert len(set(steps)) == len(steps), f"a step was logged twice: {steps}"
    return {r["step"]: r["loss"] for r in rows}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--accum", type=int, default=2)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--gc", action="store_true")
    a = p.parse_args()
    c = cfg(steps=a.steps, batch_size=a.batch, grad_accum=a.accum, gradient_checkpointing=a.gc)
    train(tiny_student(), Synthetic(), make_step_fn(a.sleep), c, a.out, resume=a.resume)


def _run(args: list[str], launcher: list[str] | None = None, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = (launcher or [sys.executable]) + [str(HERE), *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out


def test_resume_after_sigkill_reproduces_uninterrupted_losses(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    ref = _run([str(full), "--gc"])
    victim = _run([str(killed), "--gc", "--sleep", "0.15"])
    deadline = time.time() + 120
    while find_last_checkpoint(killed) is None:  # poll until the first checkpoint (step 4) exists
        assert victim.poll() is None, victim.communicate()[0]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = losses(killed)
    assert max(done) < 12, "the job finished before it was killed: the test proved nothing"
    _finish(ref)
    _finish(_run([str(killed), "--gc", "--resume"]))

    expected, got = losses(full), losses(killed)
    assert sorted(got) == list(range(1, 13))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step
    a = load_model_state(find_last_checkpoint(full) / "model.safetensors")
    b = load_model_state(find_last_checkpoint(killed) / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert (full / "tensorboard").is_dir()


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path):
    model = tiny_student()
    with pytest.raises(NonFiniteLossError, match=r"step 6: loss is nan.*step-00000004"):
        train(model, Synthetic(), make_step_fn(nan_at=6, accum=2), cfg(steps=10), tmp_path)
    last = find_last_checkpoint(tmp_path)
    assert last.name == "step-00000004" and sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [last.name]
    fresh = tiny_student()
    fresh.load_state_dict(load_model_state(last / "model.safetensors"))  # strict: complete and loadable
    state = torch.load(last / "optimizer-rank0.pt", weights_only=True)
    assert state["state"] and all(torch.isfinite(t).all() for s in state["state"].values() for t in s.values())
    assert torch.load(last / "rng-rank0.pt", weights_only=True)["torch"].dtype == torch.uint8
    assert json.loads((last / "trainer_state.json").read_text())["step"] == 4
    assert all(torch.isfinite(p).all() for p in model.parameters()), "the NaN step must not update the weights"
    assert max(losses(tmp_path)) == 5


def test_grad_accumulation_equals_larger_batch(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # JSONL-only fallback
    monkeypatch.setattr(metrics_module, "_TB_WARNED", False)
    m1, m2 = tiny_student(), tiny_student()
    with pytest.warns(UserWarning, match="tensorboard is not installed"):
        train(m1, Synthetic(), make_step_fn(), cfg(steps=3, batch_size=2, grad_accum=2, checkpoint_every=0),
              tmp_path / "a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process, not per run
        train(m2, Synthetic(), make_step_fn(), cfg(steps=3, batch_size=4, grad_accum=1, checkpoint_every=0),
              tmp_path / "b")
    la, lb = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert list(la) == [1, 2, 3] and all(la[s] == pytest.approx(lb[s], abs=1e-6) for s in la)
    for (name, p), q in zip(m1.named_parameters(), m2.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name
    assert not (tmp_path / "a" / "tensorboard").exists()


def test_resume_ignores_torn_metrics_and_unfinished_checkpoints(tmp_path):
    train(tiny_student(), Synthetic(), make_step_fn(), cfg(steps=4, checkpoint_every=2), tmp_path)
    ref = losses(tmp_path)
    shutil.rmtree(tmp_path / "checkpoints" / "step-00000004")
    (tmp_path / "checkpoints" / ".tmp-step-00000004").mkdir()  # a save killed half-way
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "lo')  # a line torn by the kill
    assert find_last_checkpoint(tmp_path).name == "step-00000002"
    train(tiny_student(), Synthetic(), make_step_fn(), cfg(steps=4, checkpoint_every=2), tmp_path, resume=True)
    again = losses(tmp_path)
    assert list(again) == [1, 2, 3, 4] and all(again[s] == pytest.approx(ref[s], abs=1e-6) for s in ref)
    assert not list((tmp_path / "checkpoints").glob(".tmp*"))


def test_parameters_freeze_the_rest(tmp_path):
    model = tiny_student()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ssm = [p for n, p in model.named_parameters() if n.startswith("model.layers.0.")]
    train(model, Synthetic(), make_step_fn(), cfg(steps=2, checkpoint_every=0), tmp_path, parameters=ssm)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("model.layers.0.") for n in changed)


def test_bf16_autocast_and_gradient_checkpointing(tmp_path):
    # A Llama here: the trainer takes any causal LM (the student's MoE does not run under bf16 autocast yet).
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, intermediate_size=64))
    seen = []

    def step_fn(model, batch):
        seen.append(torch.is_autocast_enabled(batch["input_ids"].device.type))
        ids = batch["input_ids"]
        logits = model(input_ids=ids).logits
        return {"loss": F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())}

    # An fp32 stage first in the same process: accelerate's global state must not pin the precision.
    train(model, Synthetic(), step_fn, cfg(steps=1, checkpoint_every=0), tmp_path / "fp32")
    assert seen == [False, False]
    seen.clear()
    train(model, Synthetic(), step_fn, cfg(steps=2, bf16=True, gradient_checkpointing=True), tmp_path)
    assert all(seen) and model.model.gradient_checkpointing
    assert all(math.isfinite(v) for v in losses(tmp_path).values())
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32


def test_kd_stage_through_the_trainer_lowers_the_kl(tmp_path):
    """The recipe for the KD stage: student hidden states (no full logits) + chunked loss vs a teacher."""
    from aetheris.distill.losses import KDObjective, TeacherLogits, logit_transform

    torch.manual_seed(1)
    teacher = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                           num_key_value_heads=2, intermediate_size=64)).eval()
    no_logits = torch.empty(0, dtype=torch.long)

    def step_fn(model, batch):
        ids = batch["input_ids"]
        with torch.no_grad():
            t_logits = teacher(input_ids=ids).logits * 30  # random inits are near uniform: sharpen
        out = model(input_ids=ids, output_hidden_states=True, logits_to_keep=no_logits, use_cache=False)
        student = getattr(model, "module", model)  # DDP wraps it
        res = KDObjective(temperature=2.0, alpha=0.1, chunk_size=5)(
            out.hidden_states[-1], student.lm_head.weight, TeacherLogits(t_logits), labels=ids,
            student_logit_fn=logit_transform(student.config.logit_scale, student.config.final_logit_softcapping))
        return {"loss": res.loss, "kl": res.kl, "ce": res.ce}

    train(tiny_student(), Synthetic(n=8), step_fn, cfg(steps=15, lr=1e-2, warmup_steps=0, checkpoint_every=0), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"kl", "ce", "tokens_per_s", "grad_norm", "lr"} <= set(rows[0])
    assert rows[-1]["kl"] < 0.85 * rows[0]["kl"]  # 1.32 -> 0.91 here


@pytest.mark.slow
def test_two_cpu_processes_equal_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    ref = _run([str(one), "--steps", "4", "--batch", "4", "--accum", "1"])
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    # --multi_gpu picks accelerate's torchrun launcher; on a machine without GPUs the trainer runs it on
    # CPU with gloo (`--cpu` would start a single process).
    launcher = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517"]
    _finish(_run([str(two), "--steps", "4", "--batch", "2", "--accum", "1"], launcher=launcher), timeout=300)
    _finish(ref)
    a, b = losses(one), losses(two)
    assert list(a) == list(b) == [1, 2, 3, 4]
    assert json.loads((two / "metrics.jsonl").read_text().splitlines()[0])["samples_seen"] == 4  # 2 processes x 2
    assert all(a[s] == pytest.approx(b[s], abs=1e-5) for s in a)


if __name__ == "__main__":
    main()


def test_the_configs_optimizer_and_schedule_are_what_trains(tmp_path):
    """train.<stage>.optimizer/betas/eps/schedule reach the loop: the checkpointed optimizer holds
    them and the logged learning rate follows the named schedule."""
    c = cfg(steps=5, grad_accum=1, optimizer="adam", betas=(0.5, 0.6), eps=1e-5, schedule="constant",
            warmup_steps=2, checkpoint_every=0)  # fmt: skip
    train(tiny_student(), Synthetic(), make_step_fn(), c, tmp_path)
    groups = torch.load(find_last_checkpoint(tmp_path) / "optimizer-rank0.pt", weights_only=True)["param_groups"]
    assert [g["betas"] for g in groups] == [(0.5, 0.6)] * 2 and groups[0]["eps"] == 1e-5
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]  # matrices decay, biases/norms do not
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([1.5e-3, 3e-3, 3e-3, 3e-3, 3e-3])  # linear warmup, then constant
    assert json.loads((find_last_checkpoint(tmp_path) / "trainer_state.json").read_text())["config"]["optimizer"] == "adam"
