"""MGSM (Shi et al. 2022): grade-school maths in 11 languages, 250 problems each.

Prompts, stop strings and scoring follow lm-evaluation-harness's ``mgsm_direct_<lang>`` and
``mgsm_native_cot_<lang>`` (v0.4.13): zero-shot "<Question> q\\n<Answer>" for direct, and the
8 native chain-of-thought exemplars before it for CoT.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from pathlib import Path

from aetheris.eval.tasks.base import DatasetLanguages, Item, load_hub, missing_file, read_tsv, take

HUB_ID = "juletxara/mgsm"

# Canonical registry code -> MGSM dataset code.
LANGS = {
    "bn": "bn", "de": "de", "en": "en", "es": "es", "fr": "fr", "ja": "ja",
    "ru": "ru", "sw": "sw", "te": "te", "th": "th", "zh-Hans": "zh",
}  # fmt: skip

# lm-eval lm_eval/tasks/mgsm/utils.py LANGUAGES: question prefix, CoT answer prefix,
# direct answer prefix and the CoT answer pattern.
PROMPTS = {
    "bn": ("প্রশ্ন:", "ধাপে ধাপে উত্তর:", "Answer:", r"The answer is (\-?[0-9\.\,]+)"),
    "de": ("Frage:", "Schritt-für-Schritt-Antwort:", "Antwort:", r"Die Antwort lautet (\-?[0-9\.\,]+)"),
    "en": ("Question:", "Step-by-Step Answer:", "Answer:", r"The answer is (\-?[0-9\.\,]+)"),
    "es": ("Pregunta:", "Respuesta paso a paso:", "Respuesta:", r"La respuesta es (\-?[0-9\.\,]+)"),
    "fr": ("Question :", "Réponse étape par étape :", "Réponse :", r"La réponse est (\-?[0-9\.\,]+)"),
    "ru": ("Задача:", "Пошаговоерешение:", "Answer:", r"Ответ — (\-?[0-9\.\,]+)"),
    "sw": ("Swali:", "Jibu la Hatua kwa Hatua:", "Answer:", r"Jibu ni (\-?[0-9\.\,]+)"),
    "te": ("ప్రశ్న:", "దశలవారీగా సమాధానం:", "Answer:", r"సమాధానం (\-?[0-9\.\,]+)"),
    "th": ("โจทย์:", "คำตอบทีละขั้นตอน:", "Answer:", r"คำตอบคือ (\-?[0-9\.\,]+)"),
    "ja": ("問題：", "ステップごとの答え:", "Answer:", r"答えは(\-?[0-9\.\,]+)です。"),
    "zh": ("问题：", "逐步解答:", "Answer:", r"答案是 (\-?[0-9\.\,]+)。"),
}
# lm-eval's generation stops; the tokenizer's EOS also ends generation.
EXTRA_STOPS = ["</s>", "<|im_end|>"]
# lm-eval's "flexible-extract" filter: the last number-looking span.
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_PUNCT = str.maketrans("", "", string.punctuation)


def load_mgsm(lang: str, data_dir: Path | None, limit: int | None) -> list[Item]:
    code = LANGS[lang]
    if data_dir is None:
        rows = [(r["question"], str(r["answer_number"])) for r in load_hub(HUB_ID, code, "test")]
    else:
        path = Path(data_dir) / "mgsm" / f"mgsm_{code}.tsv"
        if not path.is_file():
            raise missing_file(path, f"MGSM {lang}", HUB_ID)
        rows = []
        for n, r in enumerate(read_tsv(path, header=False), 1):
            if len(r) != 2:
                raise ValueError(
                    f"{path}:{n}: expected 2 tab-separated columns (question, answer), got {len(r)}"
                )
            rows.append((r[0], r[1]))
    items = []
    for n, (question, answer) in enumerate(rows):
        try:
            target = str(int(answer.replace(",", "")))  # the hub's answer_number is an int
        except ValueError as e:
            raise ValueError(f"MGSM {lang} item {n}: answer {answer!r} is not an integer") from e
        items.append({"id": str(n), "question": question, "answer": target, "lang": code})
    return take(items, limit)


def load_exemplars(lang: str, data_dir: Path | None) -> list[tuple[str, str]]:
    """The 8 native CoT exemplars as (question with prefix, step-by-step answer with prefix)."""
    code = LANGS[lang]
    if data_dir is None:
        return [(r["question"], r["answer"]) for r in load_hub(HUB_ID, code, "train")][:8]
    path = Path(data_dir) / "mgsm" / "mgsm_exemplars.json"
    if not path.is_file():
        raise missing_file(path, "MGSM exemplars", HUB_ID)
    data = json.loads(path.read_text(encoding="utf-8"))
    try:
        shots = data["MGSM_EXEMPLARS"][code]
        return [(shots[str(k)]["q"], shots[str(k)]["a"]) for k in range(1, 9)]
    except KeyError as e:
        raise ValueError(
            f"{path}: expected MGSM_EXEMPLARS[{code!r}]['1'..'8'] with q and a; missing {e}"
        ) from e


def flexible_extract(text: str) -> str:
    matches = FLEXIBLE.findall(text)
    if not matches:
        return "[invalid]"
    groups = [g for g in matches[-1] if g]
    return groups[0].strip() if groups else "[invalid]"


def strict_extract(text: str, pattern: str) -> str | None:
    m = re.search(pattern, text)
    return m.group(1).strip() if m else None


def exact_match(pred: str, target: str) -> bool:
    """lm-eval exact_match with ignore_case and ignore_punctuation."""
    return pred.lower().translate(_PUNCT) == target.lower().translate(_PUNCT)


class MGSMDirect(DatasetLanguages):
    name = "mgsm_direct"
    metric = "exact_match"
    higher_is_better = True
    version = "lm-eval-0.4.13"
    codes = LANGS

    def __init__(self, max_new_tokens: int = 256) -> None:
        self.max_new_tokens = max_new_tokens  # lm-eval's max_gen_toks default

    def load(self, lang: str, data_dir: Path | None, limit: int | None) -> list[Item]:
        return load_mgsm(lang, data_dir, limit)

    def prompt(self, item: Item) -> str:
        question, _, direct, _ = PROMPTS[item["lang"]]
        return f"{question} {item['question']}\n{direct}"

    def extract(self, item: Item, output: str) -> str:
        return flexible_extract(output)

    def score(self, lm, items: Sequence[Item]) -> list[Item]:
        out = []
        for code in dict.fromkeys(it["lang"] for it in items):
            group = [it for it in items if it["lang"] == code]
            stops = [PROMPTS[code][0], *EXTRA_STOPS]
            texts = lm.generate(
                [self.prompt(it) for it in group], stop=stops, max_new_tokens=self.max_new_tokens
            )
            for it, text in zip(group, texts, strict=True):
                pred = self.extract(it, text)
                out.append({"id": it["id"], "score": float(exact_match(pred, it["answer"])), "pred": pred,
                            "output": text})  # fmt: skip
        order = {it["id"]: n for n, it in enumerate(items)}
        return sorted(out, key=lambda r: order[r["id"]])


class MGSMCoT(MGSMDirect):
    """Native chain-of-thought, 8-shot. Score: the language's "The answer is N" phrase,
    falling back to the last number in the reasoning (lm-eval's strict then flexible filter)."""

    name = "mgsm_cot"
    version = "lm-eval-0.4.13-native-cot"

    def __init__(self, max_new_tokens: int = 512) -> None:
        super().__init__(max_new_tokens)
        self._shots: dict[str, str] = {}

    def load(self, lang: str, data_dir: Path | None, limit: int | None) -> list[Item]:
        items = load_mgsm(lang, data_dir, limit)
        shots = "\n\n".join(f"{q}\n{a}" for q, a in load_exemplars(lang, data_dir))
        for it in items:
            it["shots"] = shots
        return items

    def prompt(self, item: Item) -> str:
        question, answer, _, _ = PROMPTS[item["lang"]]
        return f"{item['shots']}\n\n{question} {item['question']}\n{answer}"

    def extract(self, item: Item, output: str) -> str:
        strict = strict_extract(output, PROMPTS[item["lang"]][3])
        return strict if strict is not None else flexible_extract(output)
