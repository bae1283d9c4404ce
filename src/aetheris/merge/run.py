"""Merge model folders with mergekit's Python API (`MergeConfiguration`, `run_merge`).

Tiny Aya merges each region student with the global student; Aya Expanse compared linear, SLERP,
TIES and DARE-TIES across language-family models. The output is written to a temp folder and
renamed into place, with `merge.json` recording the config and the inputs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from aetheris.errors import BadValueError, UserError
from aetheris.merge.config import MergeConfig

logger = logging.getLogger(__name__)


class MissingDependencyError(UserError, ImportError):
    """mergekit (the `merge` extra) is not installed."""


def _aliases(paths: list[str], scratch: Path) -> list[str]:
    """The same folder named twice (a model merged with itself) as distinct paths.

    mergekit keys inputs by path and refuses duplicates ("Duplicate merge inputs"); a symlink
    per repeat makes each occurrence its own input without copying any weights."""
    seen: dict[Path, int] = {}
    out = []
    for p in paths:
        real = Path(p).expanduser().resolve()
        n = seen.get(real, 0)
        seen[real] = n + 1
        if n == 0:
            out.append(str(real))
            continue
        alias = scratch / f"{real.name}-{n}"
        alias.symlink_to(real, target_is_directory=True)
        out.append(str(alias))
    return out


def mergekit_config(cfg: MergeConfig, scratch: Path) -> dict[str, Any]:
    """The mergekit configuration (as its YAML would hold it) for `cfg`."""
    paths = ([cfg.base] if cfg.base else []) + [m.model for m in cfg.models]
    named = _aliases(paths, scratch)
    base, inputs = (named[0], named[1:]) if cfg.base else (None, named)
    models = []
    for path, m in zip(inputs, cfg.models, strict=True):
        params: dict[str, Any] = {} if cfg.method == "slerp" else {"weight": m.weight}
        if m.density is not None:
            params["density"] = m.density
        models.append({"model": path, "parameters": params})
    if cfg.method == "slerp":  # mergekit's slerp takes the two endpoints, the base among them
        models = [{"model": base}, *models]
    params: dict[str, Any] = {}
    if cfg.t is not None:
        params["t"] = cfg.t
    if cfg.normalize is not None:
        params["normalize"] = cfg.normalize
    out: dict[str, Any] = {"merge_method": cfg.method, "models": models, "dtype": cfg.dtype}
    if base:
        out["base_model"] = base
    if cfg.out_dtype:
        out["out_dtype"] = cfg.out_dtype
    if params:
        out["parameters"] = params
    return out


def _is_aetheris(folder: str) -> bool:
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return config.get("model_type") == "aetheris"


def _shapes(folder: str) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            shapes |= {k: tuple(st.get_slice(k).get_shape()) for k in st.keys()}
    return shapes


def check_compatible(folders: list[str], source: str) -> None:
    """Every input holds the same tensors at the same shapes (read from the safetensors headers):
    models of different sizes or layouts cannot be merged tensor by tensor."""
    want = _shapes(folders[0])
    for f in folders[1:]:
        got = _shapes(f)
        if got != want:
            diff = sorted(set(got) ^ set(want)) or sorted(k for k in want if got[k] != want[k])
            raise BadValueError(f"{source}: {f} does not match {folders[0]} tensor for tensor "
                                f"(first difference: {diff[0]}); merge models of one architecture and size")  # fmt: skip


def merge(cfg: MergeConfig, out: str | Path, source: str = "<merge config>") -> Path:
    """Merge the config's models into the folder `out` (replaced if it exists)."""
    try:
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions
    except ImportError:
        raise MissingDependencyError("aetheris merge needs mergekit: pip install 'aetheris[merge]'") from None

    import aetheris.model  # noqa: F401  (registers the student with transformers' Auto classes)

    out = Path(out)
    folders = ([cfg.base] if cfg.base else []) + [m.model for m in cfg.models]
    check_compatible(folders, source)
    kinds = {_is_aetheris(f) for f in folders}
    if len(kinds) > 1:
        raise BadValueError(f"{source}: mixes Aetheris students and other models; merge one kind at a time")
    if True in kinds:
        from aetheris.merge.architecture import register

        register(Path(folders[0]))  # the donor of the config, tokenizer and code: base, else the first
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-merge-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aetheris-merge-") as scratch:
        spec = mergekit_config(cfg, Path(scratch))
        try:
            merge_config = MergeConfiguration.model_validate(spec)
        except Exception as err:  # mergekit's own checks (RuntimeError inside pydantic)
            raise BadValueError(f"{source}: mergekit refused the config: {str(err).splitlines()[0]}") from None
        # trust_remote_code stays off: students load through the registered classes, and code in
        # a model folder is never executed by a merge.
        options = MergeOptions(copy_tokenizer=True, random_seed=cfg.seed, quiet=True, trust_remote_code=False)
        logger.info("merge: %s of %d model(s) -> %s", cfg.method, len(cfg.models) + bool(cfg.base), out)
        try:
            run_merge(merge_config, str(tmp), options=options)
        except BaseException:  # no half-written folder left behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    record = {"method": cfg.method, "config": cfg.model_dump(mode="json"),
              "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip
    (tmp / "merge.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
