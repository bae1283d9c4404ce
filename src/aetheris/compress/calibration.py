"""Calibration text for the methods that need activations: a language-balanced mixture by default.

Sources are disjoint from what `eval` scores on the study's profile: the embedded corpus (written
for this project, in every Tiny Aya language) or SIB-200 `train` (the study evaluates on `test`).
Texts are drawn by `aetheris.data.mixture` (p(lang) ∝ n_lang^tau) and packed into fixed-length rows,
each document after the tokenizer's BOS where it adds one (`calibration_bos`, as `data.bos` in
distillation): without it gemma3-270m is not itself (BENCHMARKS §14).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from aetheris.compress.registry import MethodSettings
from aetheris.data.mixture import BOS_MODES, MixtureSampler, PackedBatches, bos_id
from aetheris.data.sib200 import sib200_examples
from aetheris.data.sources import Example, embedded_corpus


class CalibrationSource(MethodSettings):
    calibration_source: Literal["embedded", "sib200-train"] = "embedded"
    # None: every language of the source; e.g. ["en"] for the English-only baseline most tools use.
    calibration_langs: list[str] | None = None

    @field_validator("calibration_langs", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):  # --set calibration_langs=en,sw
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            from aetheris import languages

            try:
                return sorted({languages.get(v).code for v in value})
            except KeyError as e:
                raise ValueError(str(e)) from None
        return value


class CalibrationSettings(CalibrationSource):
    """Packed rows of mixture text: what the activation-based methods run the model on."""

    calibration_rows: int = Field(64, ge=1)
    calibration_seq_len: int = Field(128, ge=8)
    calibration_tau: float = Field(0.3, ge=0)
    calibration_seed: int = 0
    # auto: BOS where the tokenizer adds it; false: the rows the study's first builds used (no BOS).
    calibration_bos: Literal[BOS_MODES] = "auto"


def calibration_examples(settings: CalibrationSource) -> list[Example]:
    """The source's texts in the chosen languages."""
    if settings.calibration_source == "embedded":
        examples = embedded_corpus("text")
    else:
        examples = sib200_examples("train")
    if settings.calibration_langs is not None:
        wanted = set(settings.calibration_langs)
        examples = [e for e in examples if e.lang in wanted]
        missing = wanted - {e.lang for e in examples}
        if missing:
            raise ValueError(
                f"calibration_langs: {sorted(missing)} have no text in calibration_source="
                f"{settings.calibration_source!r}"
            )
    return examples


def calibration_batch(tokenizer: Any, settings: CalibrationSettings) -> tuple[torch.Tensor, dict[str, Any]]:
    """`calibration_rows` packed rows of token ids, and the record compression.json keeps of them."""
    sampler = MixtureSampler(calibration_examples(settings), tau=settings.calibration_tau,
                             seed=settings.calibration_seed)  # fmt: skip
    bos = bos_id(tokenizer, settings.calibration_bos)
    batches = PackedBatches(sampler, tokenizer, settings.calibration_seq_len, settings.calibration_rows, bos=bos)
    batch = next(batches)
    ids = batch["input_ids"]
    record = {
        "source": settings.calibration_source,
        "bos": bos is not None,
        "languages": list(sampler.langs),
        "count": ids.shape[0],
        "seq_len": ids.shape[1],
        "tokens": ids.numel(),
        "hash": hashlib.sha256(ids.numpy().astype("int64").tobytes()).hexdigest(),
    }
    return ids, record
