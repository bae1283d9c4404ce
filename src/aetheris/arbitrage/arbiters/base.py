"""What every arbiter is: a pydantic config and a class that picks who answers and ranks replies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from aetheris.arbitrage.pool import Candidate, Member
from aetheris.arbitrage.prompts import Prompt


class ArbiterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str

    def check_pool(self, labels: Sequence[str]) -> None:
        """Refuse a config that names pool models the pool lacks (UserError)."""


class Arbiter:
    """`generators` chooses which pool models answer a prompt; `score` ranks the candidates.

    A score is higher-is-better; every candidate gets a dict with at least `score` (floats, JSON
    safe), which the output row records beside the checks.
    """

    name: ClassVar[str]

    def __init__(self, cfg: ArbiterConfig) -> None:
        self.cfg = cfg

    def prepare(self, pool: Sequence[Member]) -> None:
        """Load what the arbiter needs (a reward model, results files) once the pool is loaded."""

    def generators(self, prompt: Prompt, pool: Sequence[Member]) -> list[Member]:
        """Default: the models tagged for the prompt's language (every model when none is)."""
        serving = [m for m in pool if m.serves(prompt.lang)]
        return serving or list(pool)

    def score(self, batch: Sequence[tuple[Prompt, Sequence[Candidate]]],
              pool: Sequence[Member]) -> list[list[dict[str, Any]]]:  # fmt: skip
        raise NotImplementedError
