"""Hybrid ratios at full depth (issue 13 §2): MambaInLlama's attention fractions on one teacher,
each with `split` and `upcycle` experts, distilled at one KD budget and measured side by side.

Students of an L-layer teacher (gemma3-270m: L = 18):

    full-<p>-<experts>   one mixer + one MoE block per teacher layer (2L blocks); attention kept on
                         round(p% * L) evenly spaced layers, SSM blocks from the others
    full-<p>p-<experts>  the same number of attention layers, placed by the per-layer probe
                         (`student.attention_layers: probe`; benchmarks/hybrid_placement.py)
    12blk-0-split        "SM" * 6, today's reference

Each student runs init -> align -> kd from one base config (`--config`, default
configs/hybrid-gemma3-270m.yaml) with only the layout, the experts and the KD steps changed, so
rows, seeds and budgets are identical. For each it records total and active parameters, held-out
KL before and after KD, FLORES bits/byte per language (SIB-200 `test`: never a calibration or
training sentence), decode ms/token and cache bytes at `--lengths` beside the teacher's (same
dtype, one run), and the run folder's disk peak.

It resumes across sessions and machines: a stage whose folder exists is skipped, a killed stage
resumes from its checkpoints, eval caches per item, and each student's figures are written to
`benchmarks/results/hybrid/<name>.json` as soon as they exist. Run it again to continue.

    python benchmarks/bench_hybrid.py --dtype bfloat16 [--students full-50-split ...] [--kd-tokens 40960]

The committed rows use 40,960 KD tokens per student (BENCHMARKS §10 says why not 200k): keep
the default so that later rows share the budget.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml
from bench_decode import cache_bytes
from common import machine, write_json
from hybrid_placement import resolved_layout, run_config, teacher_n_layers
from transformers import AutoModelForCausalLM, DynamicCache

from aetheris.distill.pipeline import run_stages
from aetheris.precision import cpu_summary

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "hybrid"
# 32 languages from all five Tiny Aya regions, high to low resource, 8 scripts.
LANGS = ("en fr de es pt it nl pl ru uk cs el tr ar fa he hi bn ta te ur mr ne zh-Hans ja ko vi th id "
         "sw yo am").split()  # fmt: skip
STAGES = ("init", "align", "kd")


def attention_layers(n_layers: int, percent: int) -> list[int]:
    """round(percent% * n) layers, evenly spaced from the first (MambaInLlama keeps 50/25/12.5%)."""
    keep = round(n_layers * percent / 100)
    if keep == 0:
        return []
    step = n_layers / keep
    return sorted({int(i * step) for i in range(keep)})


def layout_for(name: str, n_layers: int) -> tuple[str, str]:
    """(layout string, experts) for a student name like full-50-split or 12blk-0-split."""
    depth, percent, experts = name.split("-")
    if depth == "12blk":
        return "SM" * 6, experts
    keep = set(attention_layers(n_layers, int(percent)))
    return "".join(("A" if i in keep else "S") + "M" for i in range(n_layers)), experts


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def distil(cfg, record: dict) -> Path:
    out = Path(cfg.output_dir)
    for stage in STAGES:
        if (out / stage / "config.json").exists():
            continue
        started = time.perf_counter()
        run_stages(cfg, stage, resume=(out / "runs" / stage).exists())
        record.setdefault("stage_seconds", {})[stage] = round(time.perf_counter() - started, 1)
        record["disk_peak_bytes"] = max(record.get("disk_peak_bytes", 0), disk_bytes(out))
    return out / "kd"


def flores(model_dir: str, name: str, langs: list[str], sentences: int, dtype: str, out: Path) -> dict:
    from aetheris.eval.runner import run
    from aetheris.paths import shared_data_dir

    res = run([model_dir], ["flores_bpb"], out, langs=langs, data_dir=shared_data_dir(), limit=sentences,
              dtype=dtype, batch_size=8)[0]  # fmt: skip
    per_lang = {k: v["score"] for k, v in res["tasks"]["flores_bpb"]["languages"].items()}
    return {"bits_per_byte": per_lang, "mean_bits_per_byte": statistics.mean(per_lang.values())}


@torch.inference_mode()
def decode(model, n: int, steps: int, real_prefill: bool) -> dict:
    """ms/token of greedy steps after an n-token context, and the cache's bytes. A transformer's
    KV is filled with random keys/values of the right shapes (attention costs the same whatever
    they hold; a real 16k CPU prefill takes minutes); a student reads its context for real."""
    cache = DynamicCache(config=model.config)
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    if real_prefill:
        for start in range(0, n, 2048):
            model(torch.randint(0, vocab, (1, min(2048, n - start)), generator=g), cache=cache, use_cache=True,
                  logits_to_keep=1)  # fmt: skip
    else:
        c = model.config
        kv, hd = c.num_key_value_heads, getattr(c, "head_dim", c.hidden_size // c.num_attention_heads)
        for i in range(c.num_hidden_layers):
            cache.update(torch.randn(1, kv, n, hd, dtype=model.dtype), torch.randn(1, kv, n, hd, dtype=model.dtype), i)
    tok, times = torch.tensor([[1]]), []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        out = model(tok, cache=cache, use_cache=True, logits_to_keep=1)
        times.append(time.perf_counter() - t0)
        tok = out.logits[:, -1:].argmax(-1)
    return {"ms_per_token": 1e3 * statistics.median(times[1:]), "cache_bytes": cache_bytes(cache)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "hybrid-gemma3-270m.yaml")
    ap.add_argument("--students", nargs="+", default=["full-50-split", "full-50-upcycle", "full-25-split",
                    "full-25-upcycle", "full-0-split", "full-0-upcycle", "12blk-0-split", "full-50p-upcycle",
                    "full-25p-upcycle"])  # fmt: skip
    ap.add_argument("--kd-tokens", type=int, default=40_960, help="the same for every student (BENCHMARKS §10)")
    ap.add_argument("--langs", nargs="+", default=list(LANGS))
    ap.add_argument("--sentences", type=int, default=32, help="FLORES test sentences per language")
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192, 16384])
    ap.add_argument("--steps", type=int, default=8, help="decoding steps timed per length")
    ap.add_argument("--dtype", default="bfloat16", help="the committed rows are bf16 (teacher and students alike)")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "hybrid")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--keep-weights", action="store_true", help="keep init/align folders (disk)")
    ap.add_argument("--distil-only", action="store_true",
                    help="build the students and stop (measure them with a later run without it)")
    args = ap.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    header = {"machine": machine(), "cpu": cpu_summary(), "date": datetime.date.today().isoformat(),
              "command": " ".join(sys.argv), "kd_tokens": args.kd_tokens, "dtype": args.dtype}  # fmt: skip
    print(header["machine"], "|", header["cpu"], flush=True)

    teacher_file = args.results / "teacher.json"
    n_layers = teacher_n_layers(base["teacher"]["name"])
    if not args.distil_only and not teacher_file.exists():
        from aetheris.teacher.load import load_teacher

        t = load_teacher(base["teacher"]["name"], dtype=args.dtype)
        rec = {**header, "name": "teacher", "parameters": t.model.num_parameters(),
               "n_layers": t.model.config.num_hidden_layers,
               "flores": flores(base["teacher"]["name"], "teacher", args.langs, args.sentences, args.dtype,
                                args.runs / "eval"),
               "decode": {n: decode(t.model, n, args.steps, real_prefill=False) for n in args.lengths}}  # fmt: skip
        write_json(teacher_file, rec)
    for name in args.students:
        path = args.results / f"{name}.json"
        record = json.loads(path.read_text()) if path.exists() else {**header, "name": name}
        if "decode" in record:
            print(f"{name}: done", flush=True)
            continue
        cfg = run_config(base, name, n_layers, args.kd_tokens, args.runs)
        record.update(layout=cfg.student.layout, experts=cfg.student.experts, kd_steps=cfg.train.kd.steps)
        folder = distil(cfg, record)
        # A probed student's config layout is all-S until init places its attention blocks.
        record["layout"] = resolved_layout(Path(cfg.output_dir)) or cfg.student.layout
        write_json(path, record)
        if args.distil_only:
            continue
        kd_note = json.loads((folder / "stage.json").read_text())
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, args.dtype)).eval()
        record.update(parameters=model.num_parameters(), active_parameters=model.active_parameters(),
                      held_out_kl_before=kd_note["held_out_kl_before"], held_out_kl_after=kd_note["held_out_kl_after"],
                      kd_tokens_seen=kd_note["tokens"], kd_seconds=kd_note["seconds"])  # fmt: skip
        record["flores"] = flores(str(folder), name, args.langs, args.sentences, args.dtype, args.runs / "eval")
        write_json(path, record)
        record["decode"] = {n: decode(model, n, args.steps, real_prefill=True) for n in args.lengths}
        write_json(path, record)
        if not args.keep_weights:  # the kd folder is what later rows (int8 of it, the study) read
            for stage in ("init", "align"):
                shutil.rmtree(Path(cfg.output_dir) / stage, ignore_errors=True)
        print(f"{name}: KL {record['held_out_kl_before']:.3f} -> {record['held_out_kl_after']:.3f}, "
              f"{record['flores']['mean_bits_per_byte']:.3f} bits/byte", flush=True)


if __name__ == "__main__":
    main()
