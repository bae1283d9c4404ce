"""Bits per byte outside FLORES's domain: MGSM's questions (issue 13 §3's caveat).

A student distilled on SIB-200 `train` (FLORES text) is scored by the study on other FLORES
sentences, so its FLORES gap to the teacher is partly domain adaptation. MGSM's 250 grade-school
math questions per language are human translations of another domain (11 languages, 7 scripts;
no student here trained or calibrated on them). This scores each model's bits/byte on them,
language by language, beside the first model (the reference, normally the teacher), with a 95%
bootstrap interval (over questions, per language) of each model's mean ratio to it.

    python bench_ood_bpb.py gemma3-270m ../runs/.../kd --names teacher student --limit 64 \\
        --out results/ood_bpb.json
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path

import numpy as np
from common import machine, table, write_json

from aetheris.eval.lm import HFLM
from aetheris.eval.tasks.mgsm import LANGS, load_mgsm
from aetheris.paths import shared_data_dir
from aetheris.precision import cpu_summary


def question_bits(lm: HFLM, langs: list[str], limit: int, data_dir: Path) -> dict[str, dict[str, list[float]]]:
    """{lang: {"bits": [...], "bytes": [...]}} per question."""
    out = {}
    for lang in langs:
        texts = [it["question"] for it in load_mgsm(lang, data_dir, limit)]
        out[lang] = {"bits": lm.text_nll_bits(texts), "bytes": [len(t.encode("utf-8")) for t in texts]}
        print(f"  {lang}: {sum(out[lang]['bits']) / sum(out[lang]['bytes']):.3f} bits/byte", flush=True)
    return out


def bpb(scores: dict[str, list[float]], idx: np.ndarray | None = None) -> float:
    bits, n = np.asarray(scores["bits"]), np.asarray(scores["bytes"])
    if idx is not None:
        bits, n = bits[idx], n[idx]
    return float(bits.sum() / n.sum())


def ratio_ci(model: dict, ref: dict, n_boot: int, seed: int = 0) -> tuple[float, float]:
    """95% interval of mean-over-languages bpb(model) / mean bpb(ref), questions resampled within
    each language (the same questions for both models: a paired bootstrap)."""
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(n_boot):
        m, r = [], []
        for lang in ref:
            idx = rng.integers(0, len(ref[lang]["bits"]), len(ref[lang]["bits"]))
            m.append(bpb(model[lang], idx))
            r.append(bpb(ref[lang], idx))
        ratios.append(statistics.mean(m) / statistics.mean(r))
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="model names or folders; the first is the reference")
    ap.add_argument("--names", nargs="+", default=None)
    ap.add_argument("--langs", nargs="+", default=sorted(LANGS))
    ap.add_argument("--limit", type=int, default=64, help="questions per language")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    names = args.names or args.models
    if len(names) != len(args.models):
        print(f"error: --names gives {len(names)} labels for {len(args.models)} models", file=sys.stderr)
        sys.exit(2)
    unknown = sorted(set(args.langs) - set(LANGS))
    if unknown:
        print(f"error: --langs {' '.join(unknown)}: MGSM has {' '.join(sorted(LANGS))}", file=sys.stderr)
        sys.exit(2)
    header = {"machine": machine(), "cpu": cpu_summary(), "date": datetime.date.today().isoformat(),
              "command": " ".join(sys.argv), "limit": args.limit, "dtype": args.dtype,
              "models": dict(zip(names, args.models))}  # fmt: skip
    print(header["machine"], "|", header["cpu"], flush=True)
    scores = {}
    for name, model in zip(names, args.models):
        print(name, flush=True)
        scores[name] = question_bits(HFLM.load(model, dtype=args.dtype), args.langs, args.limit, shared_data_dir())
    ref = names[0]
    ref_mean = statistics.mean(bpb(scores[ref][lang]) for lang in args.langs)
    summary = {}
    for name in names:
        per_lang = {lang: bpb(scores[name][lang]) for lang in args.langs}
        mean = statistics.mean(per_lang.values())
        summary[name] = {"bits_per_byte": per_lang, "mean": mean, "x_reference": mean / ref_mean,
                         "x_reference_ci": None if name == ref else ratio_ci(scores[name], scores[ref], args.n_boot)}  # fmt: skip
    write_json(args.out, {**header, "reference": ref, "summary": summary, "questions": scores})
    rows = [[name, *(f"{s['bits_per_byte'][lang]:.3f}" for lang in args.langs), f"{s['mean']:.3f}",
             f"{s['x_reference']:.3f}" + ("" if s["x_reference_ci"] is None else
                                          " [{:.3f}, {:.3f}]".format(*s["x_reference_ci"]))]
            for name, s in summary.items()]  # fmt: skip
    print(table(["model", *args.langs, "mean", f"x {ref} [95% CI]"], rows))


if __name__ == "__main__":
    main()
