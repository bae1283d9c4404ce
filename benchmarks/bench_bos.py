"""What a teacher scores on the rows distillation feeds it: with and without its BOS (BENCHMARKS §14).

Every packed row of this project's KD, align and held-out sets was built without the tokenizer's
BOS until data.bos (a document's tokens, EOS between documents). This measures a teacher's bits
per UTF-8 byte on SIB-200 `dev` sentences (never scored by the study) in four contexts, on the same
tokens (each sentence's tokens after its first, so every context predicts the same targets):

    bos          <bos> sentence                      (how FLORES is scored, and the model was trained)
    none         sentence                            (a row's first document, before data.bos)
    packed       previous sentence <eos> sentence    (a later document of such a row)
    packed+bos   <bos> previous <eos> <bos> sentence (a row with data.bos: auto)

    python benchmarks/bench_bos.py [--teacher gemma3-270m] [--langs en sw ...] [--sentences 16]
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from common import machine, table, write_json

from aetheris.data.sib200 import sib200_texts
from aetheris.precision import cpu_summary
from aetheris.teacher.load import load_teacher

ROOT = Path(__file__).resolve().parents[1]
LANGS = ["en", "fr", "sw", "yo", "hi", "bn", "ja", "vi", "ar", "fi"]  # two per Tiny Aya region
MODES = ("bos", "none", "packed", "packed+bos")


def context(mode: str, prev: list[int], bos: int, eos: int) -> list[int]:
    return {"bos": [bos], "none": [], "packed": [*prev, eos], "packed+bos": [bos, *prev, eos, bos]}[mode]


@torch.no_grad()
def bits(model: torch.nn.Module, ctx: list[int], ids: list[int]) -> float:
    """-log2 p(ids[1:] | ctx + ids[:1]): the same targets whatever the context."""
    full = torch.tensor([ctx + ids])
    logp = F.log_softmax(model(full).logits[0].float(), -1)
    start = len(ctx) + 1
    return -float(logp[start - 1 : -1].gather(1, full[0, start:, None]).sum()) / math.log(2)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", default="gemma3-270m")
    ap.add_argument("--langs", nargs="+", default=LANGS)
    ap.add_argument("--sentences", type=int, default=16)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bos.json")
    args = ap.parse_args(argv)
    loaded = load_teacher(args.teacher, dtype="float32")
    model, tok = loaded.model.eval(), loaded.tokenizer
    if tok.bos_token_id is None:
        raise SystemExit(f"{args.teacher}: the tokenizer has no BOS; nothing to compare")
    texts = sib200_texts("dev")
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    per_lang = {}
    for lang in args.langs:
        sents = [enc(s) for s in texts[lang][: args.sentences + 1]]
        n_bytes = sum(len(tok.decode(ids[1:]).encode("utf-8")) for ids in sents[1:])
        per_lang[lang] = {mode: sum(bits(model, context(mode, prev, tok.bos_token_id, tok.eos_token_id), ids)
                                    for prev, ids in zip(sents, sents[1:])) / n_bytes for mode in MODES}  # fmt: skip
        print(lang, {m: round(v, 3) for m, v in per_lang[lang].items()}, flush=True)
    mean = {mode: sum(v[mode] for v in per_lang.values()) / len(per_lang) for mode in MODES}
    write_json(args.out, {"machine": machine(), "cpu": cpu_summary(), "date": datetime.date.today().isoformat(),
                          "command": " ".join(sys.argv), "teacher": args.teacher, "sentences": args.sentences,
                          "bits_per_byte": per_lang, "mean": mean})  # fmt: skip
    rows = [[lang, *(f"{v[m]:.3f} ({v[m] / v['bos']:.2f}x)" for m in MODES)] for lang, v in per_lang.items()]
    rows.append(["mean", *(f"{mean[m]:.3f} ({mean[m] / mean['bos']:.2f}x)" for m in MODES)])
    print(table(["language", *MODES], rows))


if __name__ == "__main__":
    main()
