"""The arbiters, one per file, in a registry (like compress's methods): name -> (config, class)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aetheris.arbitrage.arbiters.base import Arbiter, ArbiterConfig
from aetheris.arbitrage.arbiters.fixed import FixedArbiter, FixedConfig
from aetheris.arbitrage.arbiters.likelihood import LikelihoodArbiter, LikelihoodConfig
from aetheris.arbitrage.arbiters.reward import RewardArbiter, RewardConfig
from aetheris.errors import BadValueError

ARBITERS: dict[str, tuple[type[ArbiterConfig], type[Arbiter]]] = {
    "likelihood": (LikelihoodConfig, LikelihoodArbiter),
    "fixed": (FixedConfig, FixedArbiter),
    "reward": (RewardConfig, RewardArbiter),
}


def parse_arbiter(raw: Any, labels: Sequence[str]) -> ArbiterConfig:
    """The arbiter's validated config (pydantic ValidationError or a UserError on bad input)."""
    if not isinstance(raw, dict) or "name" not in raw:
        raise BadValueError(f"expected a mapping with name: one of {', '.join(ARBITERS)}; got {raw!r}")
    if raw["name"] not in ARBITERS:
        raise BadValueError(f"name={raw['name']!r} is not one of {', '.join(ARBITERS)}")
    cfg = ARBITERS[raw["name"]][0].model_validate(raw)
    cfg.check_pool(labels)
    return cfg


def build_arbiter(cfg: ArbiterConfig) -> Arbiter:
    return ARBITERS[cfg.name][1](cfg)


__all__ = ["ARBITERS", "Arbiter", "ArbiterConfig", "build_arbiter", "parse_arbiter"]
