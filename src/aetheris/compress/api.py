"""`compress(model, method, settings, out_dir)`: one method, one output folder, one record.

The folder is an HF model directory (safetensors only) that `AutoModelForCausalLM` and
`aetheris eval` load, with the tokenizer and `compression.json` beside it. It is written under a
temporary name and renamed into place, so a killed run never leaves a folder that looks finished.
`spec_key` names a (source, method, settings) triple, so a study can cache folders by it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from aetheris.compress.registry import MethodSettings, Outcome, get_method, parse_settings

log = logging.getLogger(__name__)
RECORD_FILE = "compression.json"
SCHEMA = "aetheris.compression/1"


class CompressionRecord(BaseModel):
    schema_: str = SCHEMA
    source: str
    method: str
    settings: dict[str, Any]
    spec_key: str
    calibration: dict[str, Any] | None
    seconds: float
    bytes_on_disk: int  # weight files (*.safetensors)
    parameters: int  # logical weights (a quantised matrix counts its rows x columns)
    nonzero_parameters: int
    bits_per_weight: float  # 8 · bytes_on_disk / parameters
    details: dict[str, Any]

    def write(self, folder: Path) -> None:
        text = json.dumps(self.model_dump(by_alias=False), indent=2, ensure_ascii=False)
        (Path(folder) / RECORD_FILE).write_text(text.replace('"schema_"', '"schema"') + "\n")


def spec_key(source: str, method: str, settings: Mapping[str, Any] | MethodSettings | None) -> str:
    """A short stable id of what a compressed folder is: the same spec gives the same key."""
    parsed = parse_settings(method, settings)
    text = json.dumps([str(source), method, parsed.model_dump(mode="json")], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _load_source(source: str | Path):
    import aetheris  # noqa: F401  (registers the student with the Auto classes)
    from aetheris.teacher import load_teacher

    loaded = load_teacher(str(source), dtype="float32")
    if loaded.tokenizer is None:
        raise ValueError(f"{source}: no tokenizer found; compress needs one beside the weights")
    return loaded.model, loaded.tokenizer


def logical_counts(model: nn.Module) -> tuple[int, int]:
    """Weights and non-zero weights; a torchao tensor is counted on its dequantised values."""
    total = nonzero = 0
    for p in model.parameters():  # deduplicated: tied embeddings count once
        data = p.detach()
        if type(data) is not torch.Tensor:  # a torchao subclass
            data = data.dequantize()
        total += data.numel()
        nonzero += int(torch.count_nonzero(data))
    return total, nonzero


def apply_method(model: nn.Module, tokenizer: Any, method: str,
                 settings: Mapping[str, Any] | MethodSettings | None) -> tuple[Outcome, float]:  # fmt: skip
    """Run one method in memory: (its outcome, seconds). The input model may be changed in place."""
    parsed = parse_settings(method, settings)
    start = time.perf_counter()
    outcome = get_method(method).apply(model, tokenizer, parsed)
    return outcome, time.perf_counter() - start


def write_compressed(outcome: Outcome, out_dir: str | Path, source: str, method: str,
                     settings: MethodSettings, seconds: float) -> CompressionRecord:  # fmt: skip
    """Save model, tokenizer and compression.json to `out_dir` (atomically: temp name, then rename)."""
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    outcome.model.save_pretrained(tmp)
    outcome.tokenizer.save_pretrained(tmp)
    weights = sum(f.stat().st_size for f in tmp.glob("*.safetensors"))
    params, nonzero = logical_counts(outcome.model)
    record = CompressionRecord(
        source=source, method=method, settings=settings.model_dump(mode="json"),
        spec_key=spec_key(source, method, settings), calibration=outcome.calibration,
        seconds=round(seconds, 3), bytes_on_disk=weights, parameters=params, nonzero_parameters=nonzero,
        bits_per_weight=8 * weights / max(params, 1), details=outcome.details,
    )  # fmt: skip
    record.write(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log.info("%s: %s in %.1fs, %d bytes", out, method, seconds, weights)
    return record


def compress(
    model: nn.Module | str | Path,
    method: str,
    settings: Mapping[str, Any] | MethodSettings | None,
    out_dir: str | Path,
    *,
    tokenizer: Any = None,
    source: str | None = None,
) -> CompressionRecord:
    """Compress `model` (a loaded model, or any name `aetheris teacher info` accepts / a student
    folder) with `method` and write the result to `out_dir`. Settings are validated before any
    model is loaded. A model passed in memory may be changed in place (pruning, vocab-trim)."""
    parsed = parse_settings(method, settings)
    if isinstance(model, (str, Path)):
        source = source or str(model)
        model, loaded_tok = _load_source(model)
        tokenizer = tokenizer or loaded_tok
    source = source or getattr(model.config, "_name_or_path", "") or type(model).__name__
    if tokenizer is None:
        raise ValueError("compress needs the model's tokenizer (tokenizer=...)")
    outcome, seconds = apply_method(model, tokenizer, method, parsed)
    return write_compressed(outcome, out_dir, source, method, parsed, seconds)


def read_record(folder: str | Path) -> CompressionRecord:
    data = json.loads((Path(folder) / RECORD_FILE).read_text())
    data["schema_"] = data.pop("schema", SCHEMA)
    return CompressionRecord.model_validate(data)


def load_compressed(folder: str | Path, dtype: str | torch.dtype = "auto"):
    """(model, tokenizer) of a compressed folder; quantised folders rebuild their torchao modules
    from the safetensors metadata through transformers' TorchAoConfig. `aetheris eval` loads the
    same way (`HFLM.load`), casting to an explicit dtype after loading for the same reason."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import aetheris  # noqa: F401

    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    if dtype != "auto":  # quantised tensors keep the dtype they were saved in unless cast
        model = model.to(dtype)
    return model.eval(), AutoTokenizer.from_pretrained(str(folder))
