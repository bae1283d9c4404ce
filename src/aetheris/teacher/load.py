"""Load a frozen teacher from an embedded name, a `.gguf` file, a local directory or a hub id.

Every command that takes a model reads its name through `resolve_model`, so one name means one
model everywhere; `display_name` is what people read (never a cache hash or a machine path).

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
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from rich.progress import BarColumn, DownloadColumn, TimeRemainingColumn, TransferSpeedColumn
from transformers import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GgufConfig,
    PreTrainedModel,
)

from aetheris.errors import BadValueError, MissingPathError, UserError
from aetheris.progress import Bar
from aetheris.teacher.embedded import EMBEDDED_TEACHERS, EmbeddedTeacherMissing, GGUFParts

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CACHE_MARKER = "aetheris-teacher.json"  # written last: its presence means the cache is complete
# huggingface_hub's repo id form: "name" or "namespace/name", letters, digits, "-", "_", ".".
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
ModelKind = Literal["embedded", "gguf", "folder", "hub"]


class ChecksumMismatch(UserError, ValueError):
    pass


class ModelNotFoundError(MissingPathError):
    """A model name that is no embedded teacher, no existing folder or file, and no hub model."""


class UnsupportedModelError(UserError, ValueError):
    """A model folder or hub model that transformers cannot load as a causal LM."""


def expected_names() -> str:
    """What a model name may be, for error messages."""
    return f"an embedded teacher ({', '.join(EMBEDDED_TEACHERS)}), a model folder, a .gguf file or a hub id"


@dataclass(frozen=True)
class ModelRef:
    """What a model name the user typed refers to; nothing is loaded."""

    name: str  # as typed
    kind: ModelKind
    path: Path | None = None  # the .gguf file or the model folder

    @property
    def display_name(self) -> str:
        if self.kind == "gguf":
            return self.path.stem
        if self.kind == "folder":
            return _cached_teacher_name(self.path) or self.path.resolve().name
        return self.name.rsplit("/", 1)[-1]  # a hub id's model name; `model` keeps the whole id


def resolve_model(name: str | Path) -> ModelRef:
    """Classify a model name: embedded teacher, `.gguf` file, model folder or hub id.

    Raises ModelNotFoundError, naming the value and what was expected, for a path that does not
    exist, a folder without config.json, or a name that can be neither a path nor a hub id.
    """
    text = str(name)
    if text in EMBEDDED_TEACHERS:
        return ModelRef(text, "embedded")
    path = Path(text).expanduser()
    if text.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError(f"model {text}: no such .gguf file")
        return ModelRef(text, "gguf", path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model {text}: the folder holds no config.json; "
                                     "expected a Hugging Face model folder")
        return ModelRef(text, "folder", path)
    if path.exists():
        raise ModelNotFoundError(f"model {text}: is a file, not a model; expected {expected_names()}")
    if text.startswith(("/", ".", "~")) or not HUB_ID.fullmatch(text):
        raise ModelNotFoundError(f"model {text}: no such folder; expected {expected_names()}")
    return ModelRef(text, "hub")


def display_name(name: str | Path) -> str:
    """The name people read for a model: the embedded teacher's name (also for its GGUF cache
    folder), the folder's or file's own name, or the hub model's name without its namespace.
    Never raises: a path that does not exist gives its last part."""
    try:
        return resolve_model(name).display_name
    except UserError:
        return Path(str(name).rstrip("/")).name or str(name)


def _cached_teacher_name(folder: Path) -> str | None:
    """For a GGUF cache folder (named by a hash): the teacher it was made from."""
    try:
        marker = json.loads((folder / CACHE_MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if marker.get("name"):
        return str(marker["name"])
    for teacher in EMBEDDED_TEACHERS.values():  # caches written before the marker held a name
        try:
            if teacher.installed and teacher.locate().sha256 == marker.get("sha256"):
                return teacher.name
        except EmbeddedTeacherMissing:
            continue
    return Path(str(marker.get("gguf_name", folder.name))).stem


@dataclass
class LoadedTeacher:
    model: PreTrainedModel
    tokenizer: object | None  # a transformers tokenizer, None if the source ships none
    source: str
    weights_dir: Path | None  # directory the weights were read from (the cache for GGUF)
    from_cache: bool
    seconds: float
    name: str = ""  # the display name (see `display_name`)


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
    """Load a model in eval mode with every parameter frozen.

    `source`: an embedded name (see `EMBEDDED_TEACHERS`), a `.gguf` file, a local model
    directory, or a hub id. `dtype` may also be "auto" (the checkpoint's own). `expected_sha256`
    checks a `.gguf` file (embedded teachers are always checked against their package's checksum).
    """
    start = time.perf_counter()
    torch_dtype = _dtype(dtype)
    ref = resolve_model(source)
    where, hit = _materialise(ref, cache_dir, expected_sha256)
    model = _causal_lm(ref, where, torch_dtype)
    model.eval()
    model.requires_grad_(False)
    weights_dir = None if ref.kind == "hub" else Path(where)
    return LoadedTeacher(model, _tokenizer(where), str(source), weights_dir, hit,
                         time.perf_counter() - start, ref.display_name)


def model_location(source: str | Path, *, cache_dir: str | Path | None = None) -> str:
    """A folder or hub id that transformers' `from_pretrained` reads for this model name
    (GGUF teachers are dequantised into the cache on first use)."""
    return _materialise(resolve_model(source), cache_dir, None)[0]


def _materialise(ref: ModelRef, cache_dir: str | Path | None, expected_sha256: str | None) -> tuple[str, bool]:
    """(folder or hub id, whether a GGUF cache was already there)."""
    if ref.kind in ("folder", "hub"):
        return str(ref.path or ref.name), False
    if ref.kind == "embedded":
        gguf = EMBEDDED_TEACHERS[ref.name].locate()
    else:
        gguf = GGUFParts(ref.path.name, (ref.path,), expected_sha256 or "")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target, hit = _gguf_cache(gguf, cache, ref.display_name)
    return str(target), hit


def _causal_lm(ref: ModelRef, where: str, dtype: torch.dtype | str) -> PreTrainedModel:
    """The model behind `where`, after checking that transformers can load it as a causal LM."""
    try:
        config = AutoConfig.from_pretrained(where)
    except (OSError, ValueError) as err:  # hub unreachable or unknown, bad config.json, unknown type
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if ref.kind == "hub" and isinstance(err, OSError):
            raise ModelNotFoundError(
                f"model {ref.name}: no embedded teacher, folder or .gguf file has this name and the hub "
                f"cannot provide it ({reason}); expected {expected_names()}"
            ) from None
        raise UnsupportedModelError(f"model {ref.name}: transformers cannot read its config ({reason})") from None
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise UnsupportedModelError(
            f"model {ref.name}: model type {config.model_type!r} is not a causal language model "
            "transformers can load (AutoModelForCausalLM); expected a decoder-only LM"
        )
    return AutoModelForCausalLM.from_pretrained(where, config=config, dtype=dtype)


def _dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        raise BadValueError(f"dtype {dtype!r} is not one of auto, {', '.join(DTYPES)}")
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


def _gguf_cache(gguf: GGUFParts, cache: Path, name: str) -> tuple[Path, bool]:
    """The dequantised cache folder of a GGUF file, written on first use; (folder, already there)."""
    digest = sha256_of(gguf.parts)
    if gguf.sha256 and digest != gguf.sha256.lower():
        raise ChecksumMismatch(
            f"SHA256 mismatch for {gguf.parts[0]}: expected {gguf.sha256}, got {digest}. "
            "The file is corrupt or was modified; reinstall the package or fetch the file again."
        )
    target = cache / digest
    if (target / CACHE_MARKER).is_file():
        return target, True

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
        marker = {"sha256": digest, "gguf_name": gguf.name, "source": str(gguf.parts[0]), "name": name}
        (staging / CACHE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        try:
            staging.rename(target)
        except OSError:
            if not (target / CACHE_MARKER).is_file():  # lost a race to a complete cache: fine
                raise
    return target, False


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
    with Bar(*columns, transient=True, disable=total < (64 << 20)) as progress:
        task = progress.add_task(f"sha256 {parts[0].name}", total=total)
        for part in parts:
            with part.open("rb") as f:
                while block := f.read(1 << 22):
                    digest.update(block)
                    progress.advance(task, len(block))
    return digest.hexdigest()
