"""Issue 13 §4: decoding at Tiny Aya's exact shape, student vs teacher, random weights (GPU).

The teacher is a `Cohere2ForCausalLM` with Tiny Aya Global's configuration (36 layers, hidden
2048, SwiGLU 11008, 16 query / 4 KV heads of 128, three sliding-window layers (4096) then one
global layer, 262,144-row tied vocabulary, logit scale 1.0: 3,349,227,520 parameters, the
published count). The student is what `configs/tiny-aya.yaml` makes of it (`student.layout`,
`student.experts`), built by `aetheris.distill.init.student_config` from the teacher's
introspected spec. Both get random weights: decode cost does not depend on their values.

Each model reads a real prompt of n tokens (in pieces of `--piece`), then `--steps` greedy
steps are timed, `--rounds` times, the models interleaved; a figure is the median step, with
CUDA synchronised around each step. Prints and writes (JSON) ms/token, tokens/s and cache bytes.

    python benchmarks/bench_tiny_aya_decode.py --device cuda --lengths 8192
    python benchmarks/bench_tiny_aya_decode.py --tiny --device cpu --lengths 64   # smoke test

With `--teacher NAME --student FOLDER` it times a real teacher and a real student the same way
(e.g. gemma3-270m and a distilled hybrid, on one machine and one thread: BENCHMARKS §10b's re-timing).

    python benchmarks/bench_tiny_aya_decode.py --device cpu --dtype float32 --threads 1 \
        --teacher gemma3-270m --student runs/hybrid/full-50p-upcycle/kd --lengths 512 2048 8192
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml
from bench_decode import cache_bytes
from common import machine, table
from transformers import Cohere2Config, Cohere2ForCausalLM, DynamicCache

from aetheris import AetherisForCausalLM
from aetheris.distill.init import student_config
from aetheris.model.modeling import AetherisCache
from aetheris.precision import cpu_summary
from aetheris.teacher.introspect import introspect

ROOT = Path(__file__).resolve().parents[1]
# Tiny Aya Global's config.json (CohereLabs/tiny-aya-global); --tiny shrinks widths, depth and vocabulary.
TINY_AYA = dict(vocab_size=262144, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                num_attention_heads=16, num_key_value_heads=4, sliding_window=4096, logit_scale=1.0,
                rope_theta=50000.0, layer_norm_eps=1e-5, tie_word_embeddings=True)  # fmt: skip
TINY = dict(TINY_AYA, vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, sliding_window=32, bos_token_id=1, eos_token_id=2,
            pad_token_id=0)  # fmt: skip


def teacher_config(tiny: bool, max_len: int) -> Cohere2Config:
    shape = TINY if tiny else TINY_AYA
    layer_types = (["sliding_attention"] * 3 + ["full_attention"]) * (shape["num_hidden_layers"] // 4)
    return Cohere2Config(**shape, layer_types=layer_types, max_position_embeddings=max_len)


def build(tiny: bool, layout: str, experts: str, device: str, dtype: torch.dtype, max_len: int) -> dict:
    torch.manual_seed(0)
    with torch.device(device):
        teacher = Cohere2ForCausalLM(teacher_config(tiny, max_len)).to(dtype).eval()
        cfg = student_config(introspect(teacher), layout=layout, experts=experts, init="random")
        student = AetherisForCausalLM(cfg).to(dtype).eval()
    return {"teacher": teacher, "student": student}


def load(teacher: str, student: Path, device: str, dtype: torch.dtype) -> dict:
    """A real teacher (any name `aetheris teacher info` accepts) and a student folder."""
    from aetheris.teacher.load import load_teacher

    return {"teacher": load_teacher(teacher, dtype=dtype).model.to(device).eval(),
            "student": AetherisForCausalLM.from_pretrained(student, dtype=dtype).to(device).eval()}  # fmt: skip


def new_cache(name: str, model) -> DynamicCache | AetherisCache:
    return AetherisCache(model.config) if name == "student" else DynamicCache(config=model.config)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def prompt_then_steps(name: str, model, n: int, steps: int, piece: int, device: str) -> tuple[list[float], object]:
    """Read an n-token prompt, then time `steps` greedy steps after one warm-up step."""
    g = torch.Generator().manual_seed(0)
    cache = new_cache(name, model)
    vocab = model.config.vocab_size
    for start in range(0, n, piece):
        ids = torch.randint(0, vocab, (1, min(piece, n - start)), generator=g).to(device)
        out = model(ids, use_cache=True, logits_to_keep=1, cache=cache)
    tok, times = out.logits[:, -1:].argmax(-1), []
    for _ in range(steps + 1):
        sync(device)
        t0 = time.perf_counter()
        out = model(tok, use_cache=True, logits_to_keep=1, cache=cache)
        tok = out.logits[:, -1:].argmax(-1)
        sync(device)
        times.append(time.perf_counter() - t0)
    return times[1:], cache


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny-aya.yaml", help="student layout from here")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--lengths", type=int, nargs="+", default=[8192])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--piece", type=int, default=2048, help="prompt tokens per forward")
    ap.add_argument("--tiny", action="store_true", help="small widths (a CPU smoke test of the script)")
    ap.add_argument("--teacher", default=None, help="a real teacher instead of Tiny Aya's shape (with --student)")
    ap.add_argument("--student", type=Path, default=None, help="a real student folder (with --teacher)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if (args.teacher is None) != (args.student is None):
        ap.error("--teacher and --student go together")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    if args.student:
        models = load(args.teacher, args.student, args.device, dtype)
        student = {"layout": models["student"].config.layout, "experts": models["student"].config.distillation.get("experts")}
    else:
        student = yaml.safe_load(args.config.read_text())["student"]
    info = {"machine": machine(), "cpu": cpu_summary(), "device": args.device, "dtype": args.dtype,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "tiny": args.tiny,
            "command": "python " + " ".join(sys.argv if argv is None else ["bench_tiny_aya_decode.py", *argv]),
            "layout": student["layout"], "experts": student["experts"], "threads": torch.get_num_threads(),
            "teacher": args.teacher or "Tiny Aya's shape", "student": str(args.student or args.config)}  # fmt: skip
    for key, value in info.items():
        print(f"{key}: {value}", flush=True)
    if not args.student:
        models = build(args.tiny, student["layout"], student["experts"], args.device, dtype,
                       max(args.lengths) + args.steps + 8)  # fmt: skip
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    print(f"parameters: {params}", flush=True)
    results, rows = {}, []
    with torch.no_grad():
        for n in args.lengths:
            times, size = {name: [] for name in models}, {}
            for _ in range(args.rounds):  # interleaved, so both see the same machine
                for name, model in models.items():
                    t, cache = prompt_then_steps(name, model, n, args.steps, args.piece, args.device)
                    times[name] += t
                    size[name] = cache_bytes(cache)
                    del cache
            r = results[n] = {f"{name}_step_s": statistics.median(times[name]) for name in models}
            r.update({f"{name}_cache_bytes": size[name] for name in models})
            rows.append([n, r["teacher_step_s"] * 1e3, r["student_step_s"] * 1e3, 1 / r["teacher_step_s"],
                         1 / r["student_step_s"], r["teacher_step_s"] / r["student_step_s"],
                         size["teacher"] / 2**20, size["student"] / 2**20])  # fmt: skip
            print(rows[-1], flush=True)
    print(table(["context", "teacher ms/token", "student ms/token", "teacher tokens/s", "student tokens/s",
                 "student speed-up (x)", "teacher cache MiB", "student cache MiB"], rows))  # fmt: skip
    record = {"bench": "tiny_aya_decode", **info, "parameters": params, "results": results}
    out = args.out or Path(__file__).parent / "results" / f"tiny_aya_decode_{datetime.date.today().isoformat()}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()
