"""Student quality at a fixed KD budget on a real teacher (default gemma3-270m).

Two questions, one run:

(a) init from the teacher vs random init: the same student (config, shapes, data, budgets), its
    weights copied from the teacher (MambaInLlama) or from its own random initialisation
    (`student.init: random`). Teacher init is expected to win.
(b) `upcycle` vs `split` experts (both teacher init): quality and KD tokens/s side by side.

Variants (`--variants`): teacher+split, teacher+upcycle, random+split. Each runs the public
pipeline, `parse_config` + `run_stages(cfg, stage=...)` for init, align and kd, in its own folder
`<out-dir>/<variant>/`, all with the same data seed and the same align and KD budgets, so every
variant trains on the same rows and they share one top-k teacher cache (`<out-dir>/topk-cache`;
its key includes a fingerprint of the rows, so a run over other rows is refused, not misled).

Afterwards each student and the teacher are scored with the project's harness (`flores_bpb` of
`aetheris.eval`, bits per UTF-8 byte) on the first `--sentences` FLORES/SIB-200 sentences of
`--langs` languages read from the shared data folder (`aetheris.paths.shared_data_dir`), and the
held-out KL before -> after and KD tokens/s come from each variant's kd/stage.json. Writes
`<out-dir>/results.json` (everything), `<out-dir>/results.md` and `<out-dir>/bpb.png`, and prints
the markdown table.

Time on 2 idle CPU cores with gemma3-270m: about 3 x kd_tokens / (KD tokens/s) plus ~15 minutes
(teacher loads, init, align, the top-k cache, held-out KL, FLORES). The 262k-vocabulary head
dominates KD; the progress bar shows tokens/s and the ETA of each KD stage.

Resumable: a variant whose kd/stage.json exists
is reused, a finished stage is skipped, a killed align/kd stage resumes from its last checkpoint,
and scored FLORES sentences are cached under `<out-dir>/eval/cache/`. A variant folder made with
other settings is refused (use another --out-dir). Checkpoints of finished variants are deleted
unless --keep-checkpoints (about 2 GB each for gemma3-270m's 262k-vocabulary student).

    python benchmarks/bench_kd_quality.py --out-dir runs/kd-quality
    # smoke test, a minute or two:
    python benchmarks/bench_kd_quality.py --teacher smollm2-135m --kd-tokens 256 --seq-len 32 \\
        --align-steps 2 --langs 2 --sentences 2 --out-dir /tmp/kdq-smoke
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
from common import machine, table

from aetheris import languages as registry
from aetheris.distill.config import parse_config
from aetheris.distill.pipeline import STAGES as PIPELINE_STAGES
from aetheris.distill.pipeline import run_stages
from aetheris.eval.lm import HFLM
from aetheris.eval.runner import evaluate_model, plan_languages, resolve_tasks
from aetheris.paths import REPO_ROOT, shared_data_dir
from aetheris.report.plots import COLORS, _png

VARIANTS = {  # name -> (student.init, student.experts, align settings)
    "teacher+split": ("teacher", "split", {"moe": True, "inputs": "student"}),
    "teacher+upcycle": ("teacher", "upcycle", {"moe": True, "inputs": "student"}),
    "random+split": ("random", "split", {"moe": True, "inputs": "student"}),
    "random+upcycle": ("random", "upcycle", {"moe": True, "inputs": "student"}),
    # earlier align stages, kept for comparison: every block on the teacher's own stream, with the
    # MoE blocks fitted to their MLP or (the first pipeline) left as initialised
    "teacher+split-teacher-inputs": ("teacher", "split", {"moe": True, "inputs": "teacher"}),
    "random+split-teacher-inputs": ("random", "split", {"moe": True, "inputs": "teacher"}),
    "teacher+upcycle-teacher-inputs": ("teacher", "upcycle", {"moe": True, "inputs": "teacher"}),
    "teacher+split-ssm-align": ("teacher", "split", {"moe": False, "inputs": "teacher"}),
    "random+split-ssm-align": ("random", "split", {"moe": False, "inputs": "teacher"}),
}
DEFAULT_VARIANTS = ["teacher+split", "teacher+upcycle", "random+split"]
# Eight languages, six families, seven scripts; in this order so that `--langs N` keeps variety.
DEFAULT_LANGS = ["en", "zh-Hans", "ar", "ru", "hi", "ja", "ta", "sw"]
STAGES = tuple(s for s in PIPELINE_STAGES if s != "sft")  # up to KD: what the quality is measured after
TASK = "flores_bpb"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=REPO_ROOT / "runs" / "kd-quality")
    ap.add_argument("--teacher", default="gemma3-270m", help="embedded name, model folder, .gguf or hub id")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                    help=f"comma-separated, of {', '.join(VARIANTS)}")  # fmt: skip
    ap.add_argument("--kd-tokens", type=int, default=12288,
                    help="KD budget in tokens; steps = ceil(tokens / (seq_len * batch_size))")  # fmt: skip
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=2, help="KD rows per step")
    ap.add_argument("--layout", default="SM" * 6)
    ap.add_argument("--align-steps", type=int, default=40, help="per SSM block")
    ap.add_argument("--calibration-samples", type=int, default=8,
                    help="rows of seq_len for align (and the split's k-means); the teacher runs on "
                         "all of them at once, logits included")  # fmt: skip
    ap.add_argument("--kd-lr", type=float, default=5e-4)
    ap.add_argument("--align-lr", type=float, default=3e-3)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--alpha", type=float, default=0.1, help="weight of the CE beside the KL")
    ap.add_argument("--top-k", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0, help="data and init seed, the same for every variant")
    ap.add_argument("--checkpoint-every", type=int, default=0,
                    help="KD checkpoint interval in steps; 0 = a quarter of the KD steps")  # fmt: skip
    ap.add_argument(
        "--langs",
        default=str(len(DEFAULT_LANGS)),
        help=f"a count N (the first N of {','.join(DEFAULT_LANGS)}) or comma-separated codes",
    )
    ap.add_argument("--sentences", type=int, default=16, help="FLORES sentences per language")
    ap.add_argument("--eval-batch-size", type=int, default=8)
    ap.add_argument("--data-dir", type=Path, default=None, help="default: aetheris.paths.shared_data_dir()")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    ap.add_argument("--keep-checkpoints", action="store_true")
    args = ap.parse_args(argv)
    args.out_dir = args.out_dir.expanduser().resolve()
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        ap.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if args.langs.strip().isdigit():
        n = int(args.langs)
        if not 1 <= n <= len(DEFAULT_LANGS):
            ap.error(f"--langs {n}: expected 1..{len(DEFAULT_LANGS)} or a list of codes")
        args.langs = DEFAULT_LANGS[:n]
    else:
        args.langs = [c.strip() for c in args.langs.split(",") if c.strip()]
    for name in ("kd_tokens", "seq_len", "batch_size", "align_steps", "calibration_samples", "sentences"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


# -- one variant: the public pipeline -----------------------------------------------------------


def kd_steps(args: argparse.Namespace) -> int:
    return max(1, math.ceil(args.kd_tokens / (args.seq_len * args.batch_size)))


def variant_config(args: argparse.Namespace, variant: str) -> dict:
    """The run config (a plain mapping, as a YAML file would hold it) of one variant."""
    init, experts, align_settings = VARIANTS[variant]
    steps = kd_steps(args)
    every = args.checkpoint_every or max(1, math.ceil(steps / 4))
    align = {"steps": args.align_steps, "batch_size": min(4, args.calibration_samples), "lr": args.align_lr,
             "warmup_steps": args.align_steps // 10, "keep_checkpoints": 1, "seed": args.seed,
             "log_every": max(1, args.align_steps // 4)}  # fmt: skip
    kd = {"steps": steps, "batch_size": args.batch_size, "lr": args.kd_lr, "warmup_steps": steps // 10,
          "checkpoint_every": every, "keep_checkpoints": 1, "seed": args.seed,
          "log_every": max(1, steps // 20)}  # fmt: skip
    return {
        "teacher": {"name": args.teacher, "dtype": "float32"},
        "student": {"layout": args.layout, "layer_map": "uniform", "experts": experts, "init": init},
        "data": {"train": ["embedded"], "eval": ["embedded"], "tau": 0.3, "seq_len": args.seq_len},
        "align": {"loss": "mse", "calibration_samples": args.calibration_samples, **align_settings},
        "kd": {
            "temperature": args.temperature,
            "alpha": args.alpha,
            "top_k_cache": True,
            "top_k": args.top_k,
            "chunk_size": 256,
            "cache_dir": str(args.out_dir / "topk-cache"),
        },  # fmt: skip
        "sft": {},
        "train": {"align": align, "kd": kd, "sft": {"steps": 1, "batch_size": 1, "lr": 1e-4}},  # sft: not run
        "output_dir": str(args.out_dir / variant),
    }


def train_variant(args: argparse.Namespace, variant: str) -> dict:
    """Run (or reuse) init -> align -> kd for one variant; returns its stage notes and timings."""
    data = variant_config(args, variant)
    cfg = parse_config(data, f"{variant} config")
    out = Path(cfg.output_dir)
    saved = out / "bench-config.json"
    if saved.exists():
        if json.loads(saved.read_text()) != data:
            sys.exit(f"{out} was made with other settings than this run's (see {saved}); "
                     "use another --out-dir, or delete that folder to redo the variant")  # fmt: skip
    elif out.exists() and any(out.iterdir()):
        sys.exit(f"{out} exists and is not one of this benchmark's variant folders; use another --out-dir")
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(data, indent=1))
    timings_path = out / "bench-timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    reused = (out / "kd" / "stage.json").exists()
    if reused:
        print(f"[{variant}] finished earlier: reusing {out / 'kd'}")
    else:
        for stage in STAGES:
            if (out / stage / "stage.json").exists():
                print(f"[{variant}] {stage}: done earlier, skipped")
                continue
            print(f"[{variant}] {stage} ...", flush=True)
            attempts = timings.setdefault("attempts", {})
            attempts[stage] = attempts.get(stage, 0) + 1  # > 1: resumed after a kill
            timings_path.write_text(json.dumps(timings, indent=1))
            started = time.perf_counter()
            run_stages(cfg, stage=stage, resume=True)  # resume: a killed stage goes on from its checkpoint
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - started
            timings_path.write_text(json.dumps(timings, indent=1))
    if not args.keep_checkpoints:
        for ckpt in sorted((out / "runs").glob("**/checkpoints")):
            shutil.rmtree(ckpt, ignore_errors=True)
    notes = {s: json.loads((out / s / "stage.json").read_text()) for s in STAGES}
    # The trainer's own per-step rate: without the checkpoint writes that kd/stage.json's seconds include.
    metrics = out / "runs" / "kd" / "metrics.jsonl"
    rates = [
        json.loads(line).get("tokens_per_s") for line in metrics.read_text().splitlines() if line.strip()
    ]
    rates = [r for r in rates if r]
    step_rate = statistics.median(rates) if rates else None
    return {"config": data, "notes": notes, "stage_seconds": timings, "reused": reused,
            "kd_step_tokens_per_s_median": step_rate}  # fmt: skip


# -- evaluation with the project's harness ------------------------------------------------------


def flores_bpb(lm: HFLM, name: str, args: argparse.Namespace, settings: dict) -> dict:
    tasks = resolve_tasks([TASK])
    plan = plan_languages(tasks, args.langs)
    started = time.perf_counter()
    res = evaluate_model(lm, name, tasks, plan, args.out_dir / "eval", args.data_dir, args.sentences,
                         settings)  # fmt: skip
    langs = res["tasks"][TASK]["languages"]
    return {
        "bpb": {lang: v["score"] for lang, v in langs.items()},
        "sentences": {lang: v["n"] for lang, v in langs.items()},
        "bits": {lang: sum(r["bits"] for r in v["items"]) for lang, v in langs.items()},
        "bytes": {lang: sum(r["bytes"] for r in v["items"]) for lang, v in langs.items()},
        "results_file": res["path"],
        "seconds": time.perf_counter() - started,
    }


def evaluate_teacher(args: argparse.Namespace) -> dict:
    from aetheris.teacher import load_teacher

    t = load_teacher(args.teacher, dtype="float32")
    lm = HFLM(t.model, t.tokenizer, batch_size=args.eval_batch_size)
    out = flores_bpb(lm, f"teacher:{args.teacher}", args, {"chat_template": False, "dtype": "float32"})
    out["parameters"] = sum(p.numel() for p in t.model.parameters())
    return out


def evaluate_student(args: argparse.Namespace, variant: str) -> dict:
    kd = args.out_dir / variant / "kd"
    # The item cache is keyed by the model path; the stage note (KL, seconds) keys it to these weights.
    weights = hashlib.sha256((kd / "stage.json").read_bytes()).hexdigest()[:16]
    lm = HFLM.load(str(kd), batch_size=args.eval_batch_size, dtype="float32")
    return flores_bpb(lm, str(kd), args, {"chat_template": False, "weights": weights})


# -- output ---------------------------------------------------------------------------------------


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def summarise(args: argparse.Namespace, trained: dict, scores: dict, teacher: dict) -> dict:
    rows = []
    for variant, tr in trained.items():
        init_note, kd_note = tr["notes"]["init"], tr["notes"]["kd"]
        init, experts, _ = VARIANTS[variant]
        rows.append({
            "variant": variant, "init": init, "experts": experts,
            "parameters": init_note["parameters"], "active_parameters": init_note["active_parameters"],
            "kd_tokens": kd_note["tokens"], "kd_seconds": kd_note["seconds"],
            "kd_tokens_per_s": kd_note["tokens"] / kd_note["seconds"],
            "kd_step_tokens_per_s_median": tr["kd_step_tokens_per_s_median"],
            # a resumed KD stage's seconds cover only the part after the kill: its tokens/s is too high
            "kd_resumed": tr["stage_seconds"].get("attempts", {}).get("kd", 1) > 1,
            "held_out_kl_before": kd_note["held_out_kl_before"], "held_out_kl_after": kd_note["held_out_kl_after"],
            "align": [{"kind": r.get("kind", "S"), **{k: r[k] for k in ("block", "teacher_layer", "loss_before", "loss_after")}}
                      for r in tr["notes"]["align"]["layers"]],
            "mean_bpb": mean(scores[variant]["bpb"].values()), "bpb": scores[variant]["bpb"],
            "eval": scores[variant], "stage_seconds": tr["stage_seconds"], "config": tr["config"],
        })  # fmt: skip
    by = {r["variant"]: r for r in rows}
    answers = {}
    if "teacher+split" in by and "random+split" in by:
        t, r = by["teacher+split"], by["random+split"]
        answers["a_teacher_vs_random_init"] = {
            "mean_bpb": {"teacher_init": t["mean_bpb"], "random_init": r["mean_bpb"]},
            "held_out_kl_after": {"teacher_init": t["held_out_kl_after"], "random_init": r["held_out_kl_after"]},
            "languages_where_teacher_init_is_better": sorted(g for g in t["bpb"] if t["bpb"][g] < r["bpb"][g]),
            "teacher_init_wins": t["mean_bpb"] < r["mean_bpb"] and t["held_out_kl_after"] < r["held_out_kl_after"],
        }  # fmt: skip
    if "teacher+split" in by and "teacher+upcycle" in by:
        s, u = by["teacher+split"], by["teacher+upcycle"]
        answers["b_upcycle_vs_split"] = {
            "mean_bpb": {"upcycle": u["mean_bpb"], "split": s["mean_bpb"]},
            "held_out_kl_after": {"upcycle": u["held_out_kl_after"], "split": s["held_out_kl_after"]},
            "kd_tokens_per_s": {"upcycle": u["kd_tokens_per_s"], "split": s["kd_tokens_per_s"]},
            "split_speedup": s["kd_tokens_per_s"] / u["kd_tokens_per_s"],
            "active_parameters": {"upcycle": u["active_parameters"], "split": s["active_parameters"]},
        }
    meta = {}
    for code in args.langs:
        try:
            lang = registry.get(code)
            meta[code] = {"name": lang.name, "family": lang.family, "script": lang.script, "tier": lang.tier}
        except KeyError:
            meta[code] = {}
    return {
        "bench": "kd_quality", "machine": machine(), "command": " ".join(sys.argv),
        "teacher": {"name": args.teacher, "parameters": teacher["parameters"], "mean_bpb": mean(teacher["bpb"].values()),
                    "bpb": teacher["bpb"], "eval": teacher},
        "budget": {"kd_tokens_requested": args.kd_tokens, "kd_steps": kd_steps(args), "seq_len": args.seq_len,
                   "batch_size": args.batch_size, "temperature": args.temperature, "alpha": args.alpha,
                   "align_steps_per_block": args.align_steps,
                   "calibration_samples": args.calibration_samples, "layout": args.layout, "seed": args.seed},
        "eval": {"task": TASK, "languages": meta, "sentences_per_language": args.sentences,
                 "data_dir": str(args.data_dir)},
        "variants": rows, "answers": answers,
    }  # fmt: skip


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def markdown(summary: dict) -> str:
    langs = list(summary["eval"]["languages"])
    temperature = summary["budget"].get("temperature", "?")  # results written before it was recorded: T = 2
    header = ["variant", "init", "experts", "active params", "KD tokens", "KD tokens/s",
              f"held-out KL (T = {temperature}) before -> after", "mean bpb"] + [f"{lang} bpb" for lang in langs]  # fmt: skip
    t = summary["teacher"]
    rows = [[f"teacher ({t['name']})", "-", "-", _millions(t["parameters"]), "-", "-", "-",
             f"{t['mean_bpb']:.3f}"] + [f"{t['bpb'][lang]:.3f}" for lang in langs]]  # fmt: skip
    for r in summary["variants"]:
        rows.append([r["variant"], r["init"], r["experts"], _millions(r["active_parameters"]), r["kd_tokens"],
                     f"{r['kd_tokens_per_s']:.1f}{' (resumed)' if r['kd_resumed'] else ''}", f"{r['held_out_kl_before']:.3f} -> {r['held_out_kl_after']:.3f}",
                     f"{r['mean_bpb']:.3f}"] + [f"{r['bpb'][lang]:.3f}" for lang in langs])  # fmt: skip
    meta = summary["eval"]["languages"]
    legend = "; ".join(f"{c} = {m.get('name', c)} ({m.get('family', '?')}, {m.get('script', '?')})"
                       for c, m in meta.items())  # fmt: skip
    lines = [table(header, rows), "",
             f"FLORES/SIB-200 bits per byte (lower is better), first {summary['eval']['sentences_per_language']} "
             f"sentences per language: {legend}.",
             f"Budget: {summary['budget']}."]  # fmt: skip
    a = summary["answers"].get("a_teacher_vs_random_init")
    if a:
        verdict = "teacher init wins" if a["teacher_init_wins"] else "TEACHER INIT DOES NOT WIN"
        lines.append(f"(a) {verdict}: mean bpb {a['mean_bpb']['teacher_init']:.3f} vs "
                     f"{a['mean_bpb']['random_init']:.3f} (random), held-out KL "
                     f"{a['held_out_kl_after']['teacher_init']:.3f} vs {a['held_out_kl_after']['random_init']:.3f}; "
                     f"better in {len(a['languages_where_teacher_init_is_better'])}/{len(langs)} languages.")  # fmt: skip
    b = summary["answers"].get("b_upcycle_vs_split")
    if b:
        lines.append(f"(b) upcycle vs split: mean bpb {b['mean_bpb']['upcycle']:.3f} vs {b['mean_bpb']['split']:.3f}, "
                     f"held-out KL {b['held_out_kl_after']['upcycle']:.3f} vs {b['held_out_kl_after']['split']:.3f}, "
                     f"KD tokens/s {b['kd_tokens_per_s']['upcycle']:.1f} vs {b['kd_tokens_per_s']['split']:.1f} "
                     f"(split {b['split_speedup']:.2f}x).")  # fmt: skip
    return "\n".join(lines)


def plot(summary: dict) -> bytes:
    """Grouped bars: bits per byte per language (and the mean), the teacher and each variant."""
    from matplotlib.figure import Figure

    langs = list(summary["eval"]["languages"])
    groups = langs + ["mean"]
    t = summary["teacher"]
    series = [(f"teacher ({t['name']})", [t["bpb"][lang] for lang in langs] + [t["mean_bpb"]])]
    series += [(f"{r['variant']} ({r['kd_tokens_per_s']:.1f} KD tok/s)",
                [r["bpb"][lang] for lang in langs] + [r["mean_bpb"]]) for r in summary["variants"]]  # fmt: skip
    fig = Figure(figsize=(max(6.0, 0.9 * len(groups) * len(series) / 2 + 2), 4.4))
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for k, (label, values) in enumerate(series):
        x = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(x, values, width, color=COLORS[k % len(COLORS)], label=label)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("bits per byte (lower is better)")
    b = summary["budget"]
    ax.set_title(f"FLORES bpb after KD: {b['kd_steps'] * b['batch_size'] * b['seq_len']} tokens, "
                 f"layout {b['layout']}", fontsize=10)  # fmt: skip
    ax.legend(frameon=False, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.data_dir = args.data_dir or shared_data_dir()
    # canonical codes ("zh" -> "zh-Hans"); an unknown code fails before any training
    args.langs = plan_languages(resolve_tasks([TASK]), args.langs)[TASK]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    trained = {v: train_variant(args, v) for v in args.variants}
    scores = {}
    for v in args.variants:
        print(f"[{v}] FLORES bpb ...", flush=True)
        scores[v] = evaluate_student(args, v)
    print("teacher FLORES bpb ...", flush=True)
    teacher = evaluate_teacher(args)
    summary = summarise(args, trained, scores, teacher)
    summary["seconds_this_invocation"] = time.perf_counter() - started
    summary["plot"] = str(args.out_dir / "bpb.png")
    (args.out_dir / "bpb.png").write_bytes(plot(summary))
    md = markdown(summary)
    (args.out_dir / "results.md").write_text(md + "\n")
    (args.out_dir / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    print(machine())
    print(md)
    print(f"results: {args.out_dir / 'results.json'}, {args.out_dir / 'results.md'}, {summary['plot']}")
    return summary


if __name__ == "__main__":
    main()
