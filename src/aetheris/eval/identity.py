"""Which model an item cache was scored on.

Item caches are keyed by the model's path, so a folder rebuilt in place (a compressed row with
another spec, a student distilled again) would silently reuse the old model's scores. Each cache
folder therefore records the identity of the model it holds (`model.json`): a compressed folder
is its spec key (`compression.json`; the same spec rebuilt on another CPU is the same model), any
other local folder the SHA-256 of its config and weights. A cache recorded under another identity
is removed before scoring. Hub ids and missing folders have no identity here and are not checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

IDENTITY_FILE = "model.json"
_HASHED = ("config.json", "*.safetensors", "*.bin", "*.gguf")


def spec_identity(spec_key: str) -> str:
    """The identity of a folder compressed to this spec (`aetheris.compress.spec_key`)."""
    return f"spec:{spec_key}"


def model_identity(model: str, known: dict | None = None) -> dict | None:
    """{"identity": ..., "files": {name: [size, mtime_ns]}} of a local model folder, or None.

    `known` is a previous result: when the files' sizes and times are unchanged its identity is
    reused instead of hashing the weights again (seconds per GB)."""
    folder = Path(model)
    if not folder.is_dir():
        return None
    from aetheris.compress.api import RECORD_FILE

    record = folder / RECORD_FILE
    if record.is_file():
        try:
            return {"identity": spec_identity(json.loads(record.read_text(encoding="utf-8"))["spec_key"])}
        except (OSError, ValueError, KeyError):
            pass  # an unreadable record: fall back to the weights
    files = sorted({p for pattern in _HASHED for p in folder.glob(pattern) if p.is_file()})
    stats = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}
    if known is not None and known.get("files") == stats and "identity" in known:
        return {"identity": known["identity"], "files": stats}
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode() + b"\0")
        with p.open("rb") as f:
            while block := f.read(1 << 24):
                digest.update(block)
    return {"identity": f"sha256:{digest.hexdigest()[:16]}", "files": stats}


def _recorded(cache_root: Path) -> dict | None:
    try:
        return json.loads((Path(cache_root) / IDENTITY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def holds(cache_root: Path, model: str, identity: str | None = None) -> bool:
    """Whether `cache_root` holds `model`'s scores (or predates identities); reads, never removes."""
    previous = _recorded(cache_root)
    current = {"identity": identity} if identity is not None else model_identity(model, previous)
    return current is None or previous is None or previous.get("identity") == current["identity"]


def claim_cache(cache_root: Path, model: str, identity: str | None = None) -> bool:
    """Make `cache_root` (one model's item caches) belong to `model`; False when it held another
    model's scores, which are then removed.

    `identity` overrides the folder's own (a study names the spec a compressed row is about to be
    built to). A cache from before identities were recorded is taken to hold this model."""
    path = Path(cache_root) / IDENTITY_FILE
    previous = _recorded(cache_root)
    current = {"identity": identity} if identity is not None else model_identity(model, previous)
    if current is None:
        return True
    fresh = previous is None or previous.get("identity") == current["identity"]
    if not fresh:
        log.warning("%s: its item cache was scored on another model (%s, now %s); scoring again",
                    model, previous.get("identity"), current["identity"])  # fmt: skip
        shutil.rmtree(cache_root)
    if current != previous:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(current) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    return fresh
