"""XCOPA (Ponti et al. 2020): choose the more plausible cause or effect, 11 languages.

``xcopa`` scores by log-likelihood exactly as lm-evaluation-harness's ``xcopa_<lang>``;
``xcopa_gen`` asks the model to answer 1 or 2, so generation loss cannot hide behind scoring.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from aetheris.eval.tasks.base import DatasetLanguages, Item, load_hub, missing_file, read_jsonl, take

HUB_ID = "cambridgeltl/xcopa"

# Canonical registry code -> XCOPA dataset code.
LANGS = {
    "et": "et", "ht": "ht", "id": "id", "it": "it", "qu": "qu", "sw": "sw",
    "ta": "ta", "th": "th", "tr": "tr", "vi": "vi", "zh-Hans": "zh",
}  # fmt: skip

# Copied from lm-evaluation-harness lm_eval/tasks/xcopa/utils.py (v0.4.13).
CONNECTORS = {
    "et": {"cause": "sest", "effect": "seetõttu"},
    "ht": {"cause": "poukisa", "effect": "donk sa"},
    "it": {"cause": "perché", "effect": "quindi"},
    "id": {"cause": "karena", "effect": "maka"},
    "qu": {"cause": "imataq", "effect": "chaymi"},
    "sw": {"cause": "kwa sababu", "effect": "kwa hiyo"},
    "zh": {"cause": "因为", "effect": "所以"},
    "ta": {"cause": "காரணமாக", "effect": "எனவே"},
    "th": {"cause": "เพราะ", "effect": "ดังนั้น"},
    "tr": {"cause": "çünkü", "effect": "bu yüzden"},
    "vi": {"cause": "bởi vì", "effect": "vì vậy"},
}


def load_xcopa(lang: str, data_dir: Path | None, limit: int | None) -> list[Item]:
    """The 500 test items of one language, ids ``test-<idx>``."""
    code = LANGS[lang]
    if data_dir is None:
        rows = [dict(r) for r in load_hub(HUB_ID, code, "test")]
    else:
        path = Path(data_dir) / "xcopa" / "data" / code / f"test.{code}.jsonl"
        if not path.is_file():
            raise missing_file(path, f"XCOPA {lang}", HUB_ID)
        rows = read_jsonl(path)
    items = []
    for n, r in enumerate(rows):
        if r.get("question") not in ("cause", "effect") or int(r.get("label", -1)) not in (0, 1):
            raise ValueError(f"XCOPA {lang} row {n}: expected question cause|effect and label 0|1, got {r}")
        items.append(
            {
                "id": f"test-{r.get('idx', n)}",
                "premise": r["premise"],
                "choice1": r["choice1"],
                "choice2": r["choice2"],
                "question": r["question"],
                "label": int(r["label"]),
                "lang": code,
            }
        )
    return take(items, limit)


def lm_eval_context(item: Item) -> str:
    """lm-eval's doc_to_text: premise without its final character + the connector."""
    conn = CONNECTORS[item["lang"]][item["question"]]
    return item["premise"].strip()[:-1] + f" {conn}"


def lm_eval_choices(item: Item) -> list[str]:
    """lm-eval's doc_to_choice: each choice with its first letter lower-cased."""
    return [c[0].lower() + c[1:] for c in (item["choice1"], item["choice2"])]


class _XCOPAItems(DatasetLanguages):
    """What both XCOPA variants share: the 11 languages and their items."""

    codes = LANGS

    def load(self, lang: str, data_dir: Path | None, limit: int | None) -> list[Item]:
        return load_xcopa(lang, data_dir, limit)


class XCOPA(_XCOPAItems):
    name = "xcopa"
    metric = "acc"
    higher_is_better = True
    version = "lm-eval-0.4.13"

    def score(self, lm, items: Sequence[Item]) -> list[Item]:
        # lm-eval's target_delimiter " " joins context and choice.
        requests = [(lm_eval_context(it), " " + c) for it in items for c in lm_eval_choices(it)]
        ll = lm.loglikelihood(requests)
        out = []
        for k, it in enumerate(items):
            pair = ll[2 * k : 2 * k + 2]
            pred = int(pair[1] > pair[0])  # ties go to the first choice, as argmax does
            out.append({"id": it["id"], "score": float(pred == it["label"]), "pred": pred, "ll": pair})
        return out


# -- generative variant ---------------------------------------------------------------------------

GEN_QUESTION = {"cause": "What was the cause?", "effect": "What happened as a result?"}


def gen_prompt(item: Item) -> str:
    return (
        f"Premise: {item['premise']}\n"
        f"Question: {GEN_QUESTION[item['question']]}\n"
        f"1: {item['choice1']}\n"
        f"2: {item['choice2']}\n"
        "Reply with 1 or 2.\n"
        "Answer:"
    )


def _norm(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.casefold()).strip()


def parse_choice(output: str, item: Item) -> int | None:
    """1 or 2 from a model's answer, or None when it says neither or both."""
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    first = lines[0]
    # A lone "1" or "2" (bare, "2.", "Option 1", "Answer: 2") decides; both at once is no answer.
    digits = set(re.findall(r"(?<!\d)([12])(?!\d)", first))
    if len(digits) == 1:
        return int(digits.pop())
    if digits:
        return None
    said = _norm(first)
    hits = [k for k in (1, 2) if _norm(item[f"choice{k}"]) and _norm(item[f"choice{k}"]) in said]
    return hits[0] if len(hits) == 1 else None


class XCOPAGen(_XCOPAItems):
    name = "xcopa_gen"
    metric = "acc"
    higher_is_better = True
    version = "1"
    max_new_tokens = 16

    def score(self, lm, items: Sequence[Item]) -> list[Item]:
        outputs = lm.generate(
            [gen_prompt(it) for it in items], stop=["\n\n"], max_new_tokens=self.max_new_tokens
        )
        out = []
        for it, text in zip(items, outputs, strict=True):
            choice = parse_choice(text, it)
            correct = choice is not None and choice - 1 == it["label"]
            out.append({"id": it["id"], "score": float(correct), "pred": choice, "output": text})
        return out
