"""Is a student wrong, or only over-confident? FLORES bits/byte with its logits divided by T.

For each model folder: the bits per UTF-8 byte of the first `--sentences` FLORES/SIB-200
sentences of each language when the logits are divided by each temperature in `--temps` (T = 1
is the model as it is, what the harness reports), the mean entropy of its next-token
distribution and its mean NLL per token (nats, at T = 1). A model whose bits/byte drop at T > 1
puts its mass on the wrong tokens too sharply: its entropy is below its NLL. Each text is
conditioned on BOS, as the harness's `flores_bpb` does.

    python benchmarks/bench_calibration.py runs/kd-quality/teacher+split/kd runs/kd-quality/random+split/kd
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from common import machine, table
from transformers import AutoModelForCausalLM, AutoTokenizer

import aetheris  # noqa: F401  (registers the Aetheris model with the Auto classes)
from aetheris.eval.tasks.flores import FloresBPB
from aetheris.paths import shared_data_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="model folders (transformers format)")
    ap.add_argument("--langs", default="en,zh-Hans,sw,hi")
    ap.add_argument("--sentences", type=int, default=16)
    ap.add_argument("--temps", default="0.8,1,1.25,1.5,2")
    ap.add_argument("--data-dir", type=Path, default=None, help="default: aetheris.paths.shared_data_dir()")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    args.langs = [c.strip() for c in args.langs.split(",") if c.strip()]
    args.temps = [float(t) for t in args.temps.split(",")]
    if 1.0 not in args.temps:
        args.temps.insert(0, 1.0)
    return args


@torch.inference_mode()
def score(model, tokenizer, texts: list[str], temps: list[float]) -> dict:
    nll = dict.fromkeys(temps, 0.0)
    entropy, tokens, n_bytes = 0.0, 0, 0
    for text in texts:
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer.encode(text, add_special_tokens=False)]])
        logits = model(ids).logits[0, :-1].float()
        target = ids[0, 1:, None]
        for t in temps:
            nll[t] -= torch.log_softmax(logits / t, -1).gather(1, target).sum().item()
        lp = torch.log_softmax(logits, -1)
        entropy -= (lp.exp() * lp).sum().item()
        tokens += target.shape[0]
        n_bytes += len(text.encode("utf-8"))
    return {
        "bpb": {t: nll[t] / n_bytes / math.log(2) for t in temps},
        "entropy_per_token": entropy / tokens,
        "nll_per_token": nll[1.0] / tokens,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    task = FloresBPB()
    data_dir = args.data_dir or shared_data_dir()
    texts = {lang: [it["text"] for it in task.load(lang, data_dir, args.sentences)] for lang in args.langs}
    results = {}
    for path in args.models:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        results[str(path)] = {lang: score(model, tokenizer, texts[lang], args.temps) for lang in args.langs}
        del model
    rows = []
    for path, langs in results.items():
        for lang, r in langs.items():
            best = min(r["bpb"], key=r["bpb"].get)
            bpb = [r["bpb"][t] for t in args.temps]
            rows.append([path, lang, *bpb, best, r["entropy_per_token"], r["nll_per_token"]])
    header = ["model", "lang", *(f"bpb T={t:g}" for t in args.temps), "best T", "entropy/token", "NLL/token"]
    print(f"{machine()}; {args.sentences} sentences per language\n")
    print(table(header, rows))
    out = {"bench": "calibration", "machine": machine(), "sentences": args.sentences, "results": results}
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
