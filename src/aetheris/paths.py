"""Where the offline benchmark data lives.

The data is read in place, never copied into the repository: `AETHERIS_DATA_DIR` if set, else
`<repo root>/../shared/data` (CI clones the repository with shared/ beside it).
"""

from __future__ import annotations

import os
from pathlib import Path

from aetheris.errors import MissingPathError

ENV_VAR = "AETHERIS_DATA_DIR"
# src/aetheris/paths.py -> parents[2] is the repository root (the parent of src/).
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


class DataDirNotFoundError(MissingPathError):
    """Neither $AETHERIS_DATA_DIR nor the default shared data folder exists."""


def shared_data_dir() -> Path:
    """The benchmark data folder: $AETHERIS_DATA_DIR if set, else <repo root>/../shared/data."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataDirNotFoundError(
                f"{ENV_VAR}={env!r} is not a directory. Point {ENV_VAR} at the benchmark data folder "
                f"or unset it to use the default {DEFAULT_DATA_DIR}."
            )
        return path
    if not DEFAULT_DATA_DIR.is_dir():
        raise DataDirNotFoundError(
            f"benchmark data folder not found: {ENV_VAR} is not set and the default "
            f"{DEFAULT_DATA_DIR} (<repo root>/../shared/data) does not exist. "
            f"Set {ENV_VAR} to the folder holding xcopa/, mgsm/, flores_sib200/ ..."
        )
    return DEFAULT_DATA_DIR


def data_path(*parts: str, hub_id: str | None = None) -> Path:
    """A file or folder under the data folder; FileNotFoundError names what was expected.

    `hub_id` is the Hugging Face dataset a user with network could load instead; it is named in the
    error so the message says how to proceed.
    """
    instead = f" With network access, use the hub dataset {hub_id!r} instead." if hub_id else ""
    try:
        root = shared_data_dir()
    except DataDirNotFoundError as err:
        raise DataDirNotFoundError(f"{err}{instead}") from err
    path = root.joinpath(*parts)
    if not path.exists():
        raise MissingPathError(f"expected data at {path}, but it does not exist.{instead}")
    return path
