"""Reading a YAML config file: one place for the errors every command's config gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from aetheris.errors import UserError


def read_yaml_mapping(path: str | Path, error: type[UserError]) -> dict[str, Any]:
    """The top-level mapping of the YAML file at `path`; a missing file, bad YAML or another
    top-level type raises `error` as one line naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise error(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
