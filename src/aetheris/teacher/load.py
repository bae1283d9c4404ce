"""Load a frozen teacher from an embedded name, a `.gguf` file, a local directory or a hub id.

GGUF files are dequantised once by transformers' GGUF loader (slow: about a minute for 270M
parameters) and cached as safetensors + config + tokenizer under `<cache>/<sha256 of the file>/`;
later loads read the cache. The cache directory is written under a temporary name and renamed
into place, so an interrupted first load never leaves a half cache behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, PreTrainedModel

from aetheris.teacher.embedded import EMBEDDED_TEACHERS, GGUFParts

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CACHE_MARKER = "aetheris-teacher.json"  # written last: its presence means the cache is complete


class ChecksumMismatch(ValueError):
    pass


@dataclass
class LoadedTeacher:
    model: PreTrainedModel
    tokenizer: object | None  # a transformers tokenizer, None if the source ships none
    source: str
    weights_dir: Path | None  # directory the weights were read from (the cache for GGUF)
    from_cache: bool
    seconds: float


def default_cache_dir() -> Path:
    """`$AETHERIS_CACHE/teachers`, else `~/.cache/aetheris/teachers`."""
    root = os.environ.get("AETHERIS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "aetheris") / "teachers"


def load_teacher(
    source: str | Path,
    *,
    dtype: str | torch.dtype = "float32",
    cache_dir: str | Path | None = None,
    expected_sha256: str | None = None,
) -> LoadedTeacher:
    """Load a teacher in eval mode with every parameter frozen.

    `source`: an embedded name (see `EMBEDDED_TEACHERS`), a `.gguf` file, a local model
    directory, or a hub id. `expected_sha256` checks a `.gguf` file (embedded teachers are
    always checked against the checksum their package ships).
    """
    start = time.perf_counter()
    torch_dtype = _dtype(dtype)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    text = str(source)
    if text in EMBEDDED_TEACHERS:
        gguf = EMBEDDED_TEACHERS[text].locate()
        model, tokenizer, weights_dir, hit = _load_gguf(gguf, cache, torch_dtype)
    elif text.endswith(".gguf"):
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        gguf = GGUFParts(path.name, (path,), expected_sha256 or "")
        model, tokenizer, weights_dir, hit = _load_gguf(gguf, cache, torch_dtype)
    else:
        # A local directory or a hub id: transformers resolves both.
        model = AutoModelForCausalLM.from_pretrained(text, dtype=torch_dtype)
        tokenizer = _tokenizer(text)
        weights_dir, hit = (Path(text) if Path(text).is_dir() else None), False
    model.eval()
    model.requires_grad_(False)
    return LoadedTeacher(model, tokenizer, text, weights_dir, hit, time.perf_counter() - start)


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _tokenizer(path: str, **kwargs):
    local = Path(path)
    has_files = any((local / f).is_file() for f in TOKENIZER_FILES)
    if local.is_dir() and "gguf_file" not in kwargs and not has_files:
        return None  # transformers would build an empty default tokenizer for the model type
    try:
        return AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError, TypeError, KeyError) as error:
        # weights without a tokenizer still introspect; callers that need one check for None
        log.warning("no tokenizer loaded from %s: %s", path, error)
        return None


def _load_gguf(gguf: GGUFParts, cache: Path, dtype: torch.dtype):
    digest = sha256_of(gguf.parts)
    if gguf.sha256 and digest != gguf.sha256.lower():
        raise ChecksumMismatch(
            f"SHA256 mismatch for {gguf.parts[0]}: expected {gguf.sha256}, got {digest}. "
            "The file is corrupt or was modified; reinstall the package or fetch the file again."
        )
    target = cache / digest
    if (target / CACHE_MARKER).is_file():
        model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype)
        return model, _tokenizer(str(target)), target, True

    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".tmp-{digest[:12]}-") as tmp:
        gguf_path = _single_file(gguf, Path(tmp))
        # Dequantise to float32 once (a plain dense model, which save_pretrained accepts): the
        # cache keeps full precision, `dtype` applies per load.
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent),
            gguf_file=gguf_path.name,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        tokenizer = _tokenizer(str(gguf_path.parent), gguf_file=gguf_path.name)
        staging = Path(tmp) / "out"
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        marker = {"sha256": digest, "gguf_name": gguf.name, "source": str(gguf.parts[0])}
        (staging / CACHE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        try:
            staging.rename(target)
        except OSError:
            if not (target / CACHE_MARKER).is_file():  # lost a race to a complete cache: fine
                raise
    return model.to(dtype), tokenizer, target, False


def _single_file(gguf: GGUFParts, tmp: Path) -> Path:
    """The GGUF as one file: the original, or the chunks joined inside `tmp`."""
    if len(gguf.parts) == 1:
        return gguf.parts[0]
    joined = tmp / gguf.name
    with joined.open("wb") as out:
        for part in gguf.parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 22)
    return joined


def sha256_of(parts: tuple[Path, ...] | list[Path]) -> str:
    """SHA256 of the concatenated files, with a progress bar for large ones."""
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in parts)
    columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, transient=True, disable=total < (64 << 20)) as progress:
        task = progress.add_task(f"sha256 {parts[0].name}", total=total)
        for part in parts:
            with part.open("rb") as f:
                while block := f.read(1 << 22):
                    digest.update(block)
                    progress.advance(task, len(block))
    return digest.hexdigest()
