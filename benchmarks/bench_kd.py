"""Benchmark: stage-2 KL distillation on the real gemma3-270m (262k vocabulary), tokens/s and memory.

Configurations side by side: the teacher run online every step vs its top-k log-probs read
from the pipeline's cache (`TopKCache`), each with and without gradient checkpointing on the
student, and (`*-ckptloss`) with the loss's chunks checkpointed instead of fused
(`kd.fused_loss: false`, the plain reference the fused loss is tested against), and in bf16
(`*+bf16`: `train.kd.bf16: true`, the online teacher loaded as `teacher.dtype: bfloat16`;
`*+bf16+frozen`: also `kd.freeze_embeddings`). `--precision` runs fp32 vs bf16 vs bf16+frozen
head, online and cached, in one run, and prints the CPU flags that decide bf16. Every training
step is what `aetheris distill --stage kd` does: `aetheris.distill.kd.kd_step` with the run
config's objective and an `OnlineTeacher` or a `CachedTeacher` (the cache built and keyed as the
pipeline does, `build_run_cache` + `topk_cache_key`), the training loop `trainer.train` (the
config's optimizer, clipping and schedule) on rows packed by `Run.packed`, from a student built by
`stage_init` (stage kd starts from the aligned student; alignment changes weights, not cost, so it
is skipped here).

Each configuration runs in its own process, so peak RSS is that configuration's alone:

  prep child      loads the teacher, runs stage init (student -> <work>/init), packs the rows,
                  builds the top-k cache (timed: the one-off teacher cost, as teacher tokens/s)
  train children  one per configuration and round; the cached ones never load the teacher

Rounds interleave the configurations (order reversed every other round) so load on the machine
hits all alike. Step time = time between consecutive optimizer steps (the whole loop body),
median over the steps after warmup, pooled over rounds. Peak RSS = the child's ru_maxrss at its
last optimizer step (before the loop's final checkpoint save). Then one instrumented step
(first round only) splits the time into teacher forward / student forward / loss forward / loss
backward / student backward / optimizer.

    cd benchmarks && python bench_kd.py [--seq-len 512] [--batch-size 1] [--steps 4] [--warmup 1]
        [--rounds 2] [--layout SMSMSMSMSMSM] [--top-k 64] [--configs online cached ...] [--out kd.json]
    python bench_kd.py --precision --seq-len 256 --steps 2 --rounds 2 --out results/kd_bf16.json

The run config (KD temperature, alpha, chunk size, student overrides, lr) comes from --config
(default configs/demo.yaml, the CPU recipe on this teacher); the flags override it. With
--work-dir, a later run with the same settings reuses the student, rows and cache.

Note: `aetheris distill --stage kd` itself loads the teacher even with `kd.top_k_cache` (it
builds the cache and measures held-out KL against the online teacher), so the cached rows'
memory is what the training step needs, not what that command's process holds today.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

import torch
import yaml
from common import machine, table
from torch.optim.optimizer import register_optimizer_step_post_hook

from aetheris.distill.config import parse_config
from aetheris.precision import cpu_summary

HERE = Path(__file__).resolve()
class Setup(NamedTuple):
    mode: str  # online | cached
    gc: bool = False  # gradient checkpointing on the student body
    fused: bool = True  # kd.fused_loss
    bf16: bool = False  # train.kd.bf16 (autocast); online, the teacher is loaded in bfloat16 too
    frozen: bool = False  # kd.freeze_embeddings: the tied head gets no gradient product


CONFIGS = {
    "online": Setup("online"),
    "online+gc": Setup("online", gc=True),
    "cached": Setup("cached"),
    "cached+gc": Setup("cached", gc=True),
    # the loss as it was before kd.fused_loss: chunks under checkpoint, logits recomputed in backward
    "online-ckptloss": Setup("online", fused=False),
    "cached-ckptloss": Setup("cached", fused=False),
    "online+bf16": Setup("online", bf16=True),
    "cached+bf16": Setup("cached", bf16=True),
    "online+bf16+frozen": Setup("online", bf16=True, frozen=True),
    "cached+bf16+frozen": Setup("cached", bf16=True, frozen=True),
}
PRECISION_CONFIGS = ["online", "cached", "online+bf16", "cached+bf16", "online+bf16+frozen", "cached+bf16+frozen"]
PHASES = ("teacher", "student_fwd", "loss_fwd", "loss_bwd", "student_bwd", "optimizer")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _load_cfg(work: Path):
    return parse_config(json.loads((work / "run.json").read_text()), str(work / "run.json"))


# ---------------------------------------------------------------- children


def child_prep(work: Path) -> None:
    """Teacher -> init student, packed rows, top-k cache; the cache build is timed."""
    from aetheris.distill.kd import build_run_cache, topk_cache_key
    from aetheris.distill.pipeline import Run, stage_init
    from aetheris.distill.topk_cache import tokenizer_fingerprint

    cfg = _load_cfg(work)
    run = Run(cfg)
    t0 = time.perf_counter()
    teacher = run.teacher
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    stage_init(run)
    init_s = time.perf_counter() - t0
    budget = cfg.train.kd
    rows = run.packed(cfg.data.train, budget.steps * budget.batch_size * budget.grad_accum, seed=budget.seed)
    for i, r in enumerate(rows):
        r["row_id"] = torch.tensor(i)
    torch.save(rows, work / "rows.pt")
    tok_hash = tokenizer_fingerprint(teacher.tokenizer)
    t0 = time.perf_counter()
    build_run_cache(teacher.model, rows, cfg, work / "topk-cache", topk_cache_key(cfg, tok_hash, rows))
    build_s = time.perf_counter() - t0
    tokens = int(sum(int(r["attention_mask"].sum()) for r in rows))
    out = {"tokenizer_hash": tok_hash, "teacher_load_s": load_s, "init_s": init_s, "cache_rows": len(rows),
           "cache_tokens": tokens, "cache_build_s": build_s, "teacher_tokens_per_s": tokens / build_s,
           "cache_mb": sum(p.stat().st_size for p in (work / "topk-cache").iterdir()) / 2**20,
           "student_parameters": json.loads((work / "init" / "stage.json").read_text())["parameters"],
           "peak_rss_mb": _rss_mb()}  # fmt: skip
    (work / "prep.json").write_text(json.dumps(out, indent=1))


def _profile_step(model, batch, teacher_fn, cfg, optimizer, mode: str, bf16: bool) -> dict[str, float]:
    """One training step cut into phases by wall clock (plus a hook on the student's last hidden
    state, whose gradient is ready when the loss's backward is done)."""
    from aetheris.distill.kd import kd_objective, student_forward

    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    marks = [time.perf_counter()]
    with autocast:
        teacher_out = teacher_fn(batch)
    _sync()
    marks.append(time.perf_counter())
    with autocast:
        s = student_forward(model, batch)
    _sync()
    marks.append(time.perf_counter())
    with autocast:
        res = kd_objective(cfg.kd)(s.hidden, s.head, teacher_out, labels=batch["labels"],
                                   attention_mask=batch["attention_mask"], student_logit_fn=s.logit_fn)  # fmt: skip
    res.loss = res.loss + s.router_loss
    _sync()
    marks.append(time.perf_counter())
    at_hidden = []
    s.hidden.register_hook(lambda g: at_hidden.append(time.perf_counter()))
    res.loss.backward()
    _sync()
    end_bwd = time.perf_counter()
    marks += [at_hidden[0] if at_hidden else end_bwd, end_bwd]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if cfg.train.kd.clip is not None:
        torch.nn.utils.clip_grad_norm_(params, cfg.train.kd.clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _sync()
    marks.append(time.perf_counter())
    t = {name: b - a for name, a, b in zip(PHASES, marks, marks[1:])}
    t["total"] = marks[-1] - marks[0]
    if mode == "online":  # the teacher's 262k-row head, made inside the loss once per chunk forward
        flat = teacher_out.hidden.reshape(-1, teacher_out.hidden.shape[-1])
        t0 = time.perf_counter()
        with torch.no_grad(), autocast:
            for i in range(0, flat.shape[0], cfg.kd.chunk_size):
                logits = (flat[i : i + cfg.kd.chunk_size] @ teacher_out.head.t()).float()
                if teacher_out.logit_fn is not None:
                    teacher_out.logit_fn(logits)
        _sync()
        t["teacher_head_once"] = time.perf_counter() - t0
    return t


def child_train(work: Path, name: str, rnd: int, profile: bool) -> None:
    from aetheris.distill.kd import (
        CachedTeacher,
        OnlineTeacher,
        kd_objective,
        kd_parameters,
        kd_step,
        topk_cache_key,
    )
    from aetheris.distill.topk_cache import TopKCache
    from aetheris.distill.trainer import default_collate, train
    from aetheris.model import AetherisForCausalLM

    setup = CONFIGS[name]
    mode, gc, fused = setup.mode, setup.gc, setup.fused
    cfg = _load_cfg(work)
    kd_cfg = cfg.kd.model_copy(update={"fused_loss": fused, "freeze_embeddings": setup.frozen})
    teacher_cfg = cfg.teacher.model_copy(update={"dtype": "bfloat16" if setup.bf16 else cfg.teacher.dtype})
    cfg = cfg.model_copy(update={"kd": kd_cfg, "teacher": teacher_cfg})
    prep = json.loads((work / "prep.json").read_text())
    student = AetherisForCausalLM.from_pretrained(work / "init", dtype=torch.float32)
    rows = torch.load(work / "rows.pt", weights_only=True)
    teacher_loaded = False
    t0 = time.perf_counter()
    if mode == "online":
        from aetheris.teacher import load_teacher

        teacher = load_teacher(cfg.teacher.name, dtype=cfg.teacher.dtype)
        teacher_fn = OnlineTeacher(teacher.model)
        teacher_loaded = True
    else:
        teacher_fn = CachedTeacher(TopKCache(work / "topk-cache", **topk_cache_key(cfg, prep["tokenizer_hash"], rows)))
    objective = kd_objective(cfg.kd)
    setup_s = time.perf_counter() - t0

    first_start: list[float] = []
    ends: list[float] = []
    tokens: list[int] = []
    rss: list[float] = []
    optimizers: list[torch.optim.Optimizer] = []
    timing = [True]

    def step_fn(model, batch):
        if not first_start:
            first_start.append(time.perf_counter())
        tokens.append(int(batch["attention_mask"].sum()))
        res = kd_step(model, batch, teacher_fn, objective)
        return {"loss": res.loss, "kl": res.kl, "ce": res.ce}

    def after_step(optimizer, args, kwargs):
        if timing[0]:
            _sync()
            ends.append(time.perf_counter())
            rss.append(_rss_mb())
            if not optimizers:
                optimizers.append(optimizer)

    handle = register_optimizer_step_post_hook(after_step)
    budget = cfg.train.kd.model_copy(update={"gradient_checkpointing": gc, "bf16": setup.bf16})
    out_dir = work / "runs" / f"{name}-r{rnd}"
    train(student, rows, step_fn, budget, out_dir, stage="kd", parameters=kd_parameters(student, cfg.kd))
    timing[0] = False
    starts = first_start + ends[:-1]
    steps = [b - a for a, b in zip(starts, ends)]
    result = {"config": name, "round": rnd, **setup._asdict(), "teacher_dtype": cfg.teacher.dtype,
              "teacher_loaded": teacher_loaded, "setup_s": setup_s, "step_s": steps,
              "tokens_per_step": statistics.mean(tokens) * budget.grad_accum, "peak_rss_mb": rss[-1],
              "metrics": (out_dir / "metrics.jsonl").read_text().splitlines()[-1:]}  # fmt: skip
    shutil.rmtree(out_dir, ignore_errors=True)  # the final checkpoint: GBs of model and optimizer state
    if profile:
        batch = default_collate(rows[: budget.batch_size])
        student.train()
        result["profile"] = _profile_step(student, batch, teacher_fn, cfg, optimizers[0], mode, setup.bf16)
    handle.remove()
    (work / f"result-{name}-r{rnd}.json").write_text(json.dumps(result, indent=1))


# ---------------------------------------------------------------- parent


def spawn(argv: list[str], log: Path) -> tuple[float, float]:
    """Run this script as a child; (its peak RSS in MB from wait4, wall seconds)."""
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, str(HERE), *argv], stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.stderr.write(log.read_text()[-6000:])
        raise SystemExit(f"child {' '.join(argv)} failed with exit status {proc.returncode} (log: {log})")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def run_config(args: argparse.Namespace, work: Path) -> dict:
    data = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    data["student"]["layout"] = args.layout
    data["data"]["seq_len"] = args.seq_len
    data["align"]["calibration_samples"] = args.calibration_samples
    data["kd"].update(top_k_cache=True, top_k=args.top_k, cache_dir=str(work / "topk-cache"))
    if args.chunk_size:
        data["kd"]["chunk_size"] = args.chunk_size
    kd = data["train"]["kd"]
    kd.update(steps=args.warmup + args.steps, batch_size=args.batch_size, grad_accum=1, checkpoint_every=0,
              log_every=10**6, gradient_checkpointing=False, bf16=False)  # fmt: skip
    data["output_dir"] = str(work)
    return parse_config(data, args.config).model_dump(mode="json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4, help="timed optimizer steps per child")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--rounds", type=int, default=2, help="each configuration runs once per round")
    ap.add_argument("--layout", default="SM" * 6)
    ap.add_argument("--top-k", type=int, default=64)
    ap.add_argument(
        "--chunk-size", type=int, default=0, help="KD positions per logits chunk (0: the config's)"
    )
    ap.add_argument("--calibration-samples", type=int, default=4, help="rows for the split-expert init")
    ap.add_argument("--config", default=str(HERE.parent.parent / "configs" / "demo.yaml"))
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--precision", action="store_true", help="the fp32 / bf16 / bf16+frozen-head configurations, "
                    "online and cached (overrides --configs)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--work-dir", help="default: a temporary folder, removed at the end")
    ap.add_argument("--start-round", type=int, default=0, help="with --work-dir: add rounds to an earlier run's")
    ap.add_argument("--summarise", action="store_true", help="run nothing: summarise the rounds the children "
                    "of an earlier run (same settings, --work-dir) completed")
    ap.add_argument("--out", help="write the JSON results here")
    ap.add_argument("--child", choices=["prep", "train"], help=argparse.SUPPRESS)
    ap.add_argument("--name", help=argparse.SUPPRESS)
    ap.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.precision:
        args.configs = PRECISION_CONFIGS
    if args.child == "prep":
        return child_prep(Path(args.work_dir))
    if args.child == "train":
        return child_train(
            Path(args.work_dir), args.name, args.round, not args.no_profile and args.round == 0
        )

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench-kd-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        cfg = run_config(args, work)
        text = json.dumps(cfg, indent=1)
        if args.summarise and not ((work / "prep.json").exists() and (work / "run.json").read_text() == text):
            raise SystemExit(f"--summarise: {work} holds no prepared run with these settings")
        if (work / "prep.json").exists() and (work / "run.json").read_text() == text:
            print(f"work dir {work}: reusing its student, rows and top-k cache (same run config)")
            prep = json.loads((work / "prep.json").read_text())
            prep_rss, prep_wall = prep["child_peak_rss_mb"], prep["child_wall_s"]
        else:
            (work / "prep.json").unlink(missing_ok=True)
            shutil.rmtree(work / "topk-cache", ignore_errors=True)
            (work / "run.json").write_text(text)
            print(f"work dir {work}; preparing (teacher, stage init, top-k cache) ...", flush=True)
            prep_rss, prep_wall = spawn(["--child", "prep", "--work-dir", str(work)], work / "prep.log")
            prep = json.loads((work / "prep.json").read_text())
            prep.update(child_peak_rss_mb=prep_rss, child_wall_s=prep_wall)
            (work / "prep.json").write_text(json.dumps(prep, indent=1))
        results: dict[str, list[dict]] = {name: [] for name in args.configs}
        for rnd in range(args.start_round, args.rounds):
            order = args.configs if rnd % 2 == 0 else args.configs[::-1]
            for name in order:
                if args.summarise:  # the children's saved results only
                    if (saved := work / f"result-{name}-r{rnd}.json").exists():
                        results[name].append({"child_peak_rss_mb": None, **json.loads(saved.read_text())})
                    continue
                argv = ["--child", "train", "--work-dir", str(work), "--name", name, "--round", str(rnd)]
                if args.no_profile:
                    argv.append("--no-profile")
                rss, wall = spawn(argv, work / f"{name}-r{rnd}.log")
                res = json.loads((work / f"result-{name}-r{rnd}.json").read_text())
                res.update(child_peak_rss_mb=rss, child_wall_s=wall)
                results[name].append(res)
                timed = res["step_s"][args.warmup :]
                print(f"round {rnd} {name}: steps {', '.join(f'{s:.2f}' for s in res['step_s'])} s "
                      f"(first {args.warmup} untimed); peak RSS {res['peak_rss_mb']:.0f} MB; "
                      f"median {statistics.median(timed):.2f} s", flush=True)  # fmt: skip
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    summary = {}
    for name, runs in results.items():
        if not runs:
            continue
        timed = [s for r in runs for s in r["step_s"][args.warmup :]]
        med = statistics.median(timed)
        summary[name] = {
            "step_s_median": med,
            "step_s_min": min(timed),
            "step_s_max": max(timed),
            "round_medians_s": [statistics.median(r["step_s"][args.warmup :]) for r in runs],
            "tokens_per_s": runs[0]["tokens_per_step"] / med,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "child_peak_rss_mb": max(r["child_peak_rss_mb"] or 0 for r in runs),
            "rounds": len(runs),
            "teacher_loaded": runs[0]["teacher_loaded"],
            "profile": next((r["profile"] for r in runs if "profile" in r), None),
        }
    base = summary.get("online", {}).get("tokens_per_s")
    rows = []
    for name, s in summary.items():
        s["vs_online"] = s["tokens_per_s"] / base if base else None
        spread = f"{s['step_s_min']:.3g}–{s['step_s_max']:.3g}"
        rows.append([name, s["tokens_per_s"], s["step_s_median"], spread, s["peak_rss_mb"],
                     s["vs_online"] if base else "-"])  # fmt: skip

    kd = cfg["kd"]
    print()
    print(machine())
    print(cpu_summary())
    print(f"teacher {cfg['teacher']['name']} ({cfg['teacher']['dtype']}); student layout {args.layout} "
          f"({prep['student_parameters'] / 1e6:.1f}M parameters, experts {cfg['student']['experts']}, "
          f"overrides {cfg['student']['overrides']}); seq_len {args.seq_len}, batch {args.batch_size}; "
          f"KD T={kd['temperature']} alpha={kd['alpha']} chunk {kd['chunk_size']} top-k {kd['top_k']}; "
          f"{args.steps} timed steps after {args.warmup} warmup x {min(s['rounds'] for s in summary.values())}"
          f"-{max(s['rounds'] for s in summary.values())} round(s)")  # fmt: skip
    print(table(["config", "tokens/s", "step (s, median)", "step range (s)", "peak RSS (MB)",
                 "tokens/s vs online (x)"], rows))  # fmt: skip
    print(f"\ntop-k cache build (one-off, not in the rows above): {prep['cache_tokens']} tokens in "
          f"{prep['cache_build_s']:.1f} s = {prep['teacher_tokens_per_s']:.1f} teacher tokens/s; "
          f"{prep['cache_mb']:.1f} MB on disk; prep child peak RSS {prep_rss:.0f} MB")  # fmt: skip
    for gc in ("", "+gc"):
        if f"online{gc}" in summary and f"cached{gc}" in summary:
            on, ca = summary[f"online{gc}"]["tokens_per_s"], summary[f"cached{gc}"]["tokens_per_s"]
            amortised = 1 / (1 / ca + 1 / prep["teacher_tokens_per_s"])
            print(f"cached/online{gc}: {ca / on:.2f}x (target >= 2x: {'met' if ca / on >= 2 else 'not met'}); "
                  f"with the cache build paid in one epoch: {amortised / on:.2f}x")  # fmt: skip

    for mode in ("online", "cached"):
        for variant in ("+bf16", "+bf16+frozen"):
            if mode in summary and f"{mode}{variant}" in summary:
                r = summary[f"{mode}{variant}"]["tokens_per_s"] / summary[mode]["tokens_per_s"]
                m = summary[f"{mode}{variant}"]["peak_rss_mb"] / summary[mode]["peak_rss_mb"]
                print(f"{mode}{variant} vs {mode} (fused fp32): {r:.2f}x tokens/s (AMX target >= 3x), "
                      f"{m:.2f}x peak RSS")  # fmt: skip
        if mode in summary and f"{mode}-ckptloss" in summary:
            r = summary[mode]["tokens_per_s"] / summary[f"{mode}-ckptloss"]["tokens_per_s"]
            print(f"{mode}: fused loss vs checkpointed loss chunks: {r:.2f}x tokens/s")

    pct = lambda x, total: f"{100 * x / total:.0f}%"
    # the teacher's head runs inside the loss: once per chunk fused, twice checkpointed (recompute)
    heads = {name: 1 if CONFIGS[name].fused else 2 for name in summary}
    prof = [[name, s["profile"]["total"], *(pct(s["profile"][p], s["profile"]["total"]) for p in PHASES),
             pct(heads[name] * s["profile"].get("teacher_head_once", 0), s["profile"]["total"])]
            for name, s in summary.items() if s["profile"]]  # fmt: skip
    if prof:
        print("\nOne instrumented step, fraction of its time per phase (loss_* include the 262k-vocab "
              "heads; fused, the head gradients are taken in loss_fwd; online, the teacher's head runs "
              "inside the loss, ≈ the last column):")  # fmt: skip
        print(table(["config", "step (s)", *PHASES, "teacher head in loss"], prof))
    out = {"bench": "kd", "machine": machine(), "cpu": cpu_summary(), "args": {k: v for k, v in vars(args).items() if k not in
           ("child", "name", "round")}, "run_config": cfg, "prep": prep, "results": summary,
           "runs": {n: [{k: v for k, v in r.items() if k != "profile"} for r in rs] for n, rs in results.items()}}  # fmt: skip
    print(json.dumps({"bench": "kd", "results": {n: {k: s[k] for k in ("tokens_per_s", "peak_rss_mb", "vs_online")}
                      for n, s in summary.items()}}))  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
