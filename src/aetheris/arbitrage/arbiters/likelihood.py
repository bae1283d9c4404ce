"""`likelihood` (the default): the candidate the whole pool finds most likely, per UTF-8 byte.

Each pool model scores each candidate's reply given the prompt in its own chat format; the
score is the mean over the pool of log p(reply | prompt) / bytes(reply). Per byte, because the
pool's tokenizers cut the same text into different numbers of tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from aetheris.arbitrage.arbiters.base import Arbiter, ArbiterConfig
from aetheris.arbitrage.pool import Candidate, Member
from aetheris.arbitrage.prompts import Prompt


class LikelihoodConfig(ArbiterConfig):
    name: Literal["likelihood"] = "likelihood"


class LikelihoodArbiter(Arbiter):
    name = "likelihood"

    def score(self, batch: Sequence[tuple[Prompt, Sequence[Candidate]]],
              pool: Sequence[Member]) -> list[list[dict[str, Any]]]:  # fmt: skip
        pairs = [(p, c.text) for p, cands in batch for c in cands]
        per_model = {m.label: m.loglik_per_byte(pairs) for m in pool}
        flat = []
        for i in range(len(pairs)):
            each = {label: scores[i] for label, scores in per_model.items()}
            mean = sum(each.values()) / len(each)
            flat.append({"score": mean if math.isfinite(mean) else None,
                         "loglik_per_byte": {k: v if math.isfinite(v) else None for k, v in each.items()}})  # fmt: skip
        out, at = [], 0
        for _, cands in batch:
            out.append(flat[at : at + len(cands)])
            at += len(cands)
        return out
