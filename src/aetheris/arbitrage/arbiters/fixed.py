"""`fixed`: route each language to the pool model that scores best on it in harness results.

`results` maps pool labels to `aetheris eval` results files (schema aetheris.results/1); `task`
names the task whose per-language score decides (its `higher_is_better` is respected). Only the
routed model answers. A language none of the files covers goes to the model with the best mean
score over the languages it has (`fallback`, recorded as the reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from aetheris.arbitrage.arbiters.base import Arbiter, ArbiterConfig
from aetheris.arbitrage.pool import Candidate, Member
from aetheris.arbitrage.prompts import Prompt
from aetheris.errors import BadValueError
from aetheris.eval.results import ResultsError, load_results
from aetheris.languages import get


class FixedConfig(ArbiterConfig):
    name: Literal["fixed"] = "fixed"
    task: str = Field("tools", description="the task whose per-language score routes")
    results: dict[str, Path] = Field(min_length=1, description="pool label -> results JSON")

    def check_pool(self, labels: Sequence[str]) -> None:
        unknown = sorted(set(self.results) - set(labels))
        if unknown:
            raise BadValueError(f"results: {unknown} are not pool labels ({', '.join(labels)})")
        self.routes()  # reads and validates every file now, before any model loads

    def routes(self) -> tuple[dict[str, tuple[str, dict[str, float]]], str]:
        """({language: (label, {label: score})}, fallback label)."""
        scores: dict[str, dict[str, float]] = {}
        sign = 1.0
        for label, path in self.results.items():
            try:
                res = load_results(path)
            except (ResultsError, FileNotFoundError) as e:
                raise BadValueError(f"results.{label}: {e}") from None
            if self.task not in res.tasks:
                raise BadValueError(f"results.{label}: {path} has no task {self.task!r} "
                                    f"(it has {', '.join(res.tasks)})")  # fmt: skip
            task = res.tasks[self.task]
            sign = 1.0 if task.higher_is_better else -1.0
            for lang, lr in task.languages.items():
                scores.setdefault(get(lang).code, {})[label] = lr.score
        routes = {lang: (max(s, key=lambda k: sign * s[k]), s) for lang, s in scores.items()}
        means = {label: [s[label] for s in scores.values() if label in s] for label in self.results}
        fallback = max(means, key=lambda k: sign * sum(means[k]) / max(1, len(means[k])))
        return routes, fallback


class FixedArbiter(Arbiter):
    name = "fixed"
    cfg: FixedConfig

    def prepare(self, pool: Sequence[Member]) -> None:
        self._routes, self._fallback = self.cfg.routes()

    def route(self, lang: str) -> tuple[str, str]:
        """(label, why) for one language."""
        if lang in self._routes:
            label, scores = self._routes[lang]
            shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(scores.items()))
            return label, f"best {self.cfg.task} score on {lang}: {shown}"
        return self._fallback, f"no {self.cfg.task} score for {lang}: fallback to the best mean"

    def generators(self, prompt: Prompt, pool: Sequence[Member]) -> list[Member]:
        label, _ = self.route(prompt.lang)
        return [m for m in pool if m.label == label]

    def score(self, batch: Sequence[tuple[Prompt, Sequence[Candidate]]],
              pool: Sequence[Member]) -> list[list[dict[str, Any]]]:  # fmt: skip
        out = []
        for prompt, cands in batch:
            label, why = self.route(prompt.lang)
            out.append([{"score": 1.0 if c.model == label else 0.0, "route": why} for c in cands])
        return out
