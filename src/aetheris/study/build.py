"""Build the study's compressed models on demand, through `aetheris.compress`, and cache them.

A row's folder is `<out>/models/<name>`; it is reused when its compression.json holds the same
spec key (source, method, settings), and rebuilt when the spec changed. `compress` writes under a
temporary name and renames, so a killed build leaves no folder that looks finished.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from aetheris.study.config import TEACHER, ModelEntry, StudyConfig

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One model of the study as the run sees it."""

    name: str
    method: str  # teacher, student, or the compress method
    source: str  # what `aetheris eval` loads (its path names the row's item caches)
    missing: str | None = None  # why it cannot be built or scored here (its cached scores may still be reported)
    built: bool = False  # built in this run (else cached or a folder given)
    spec: str = ""  # method + settings, for the table
    key: str = ""  # compress spec key: a cached folder is reused only under the same key


def describe(entry: ModelEntry) -> str:
    if entry.compress is None:
        return f"folder {entry.path}"
    settings = ", ".join(f"{k}={v}" for k, v in entry.compress.settings.items())
    of = "" if entry.of == TEACHER else f" of {entry.of}"
    return f"{entry.compress.method}{f' ({settings})' if settings else ''}{of}"


def plan_rows(cfg: StudyConfig, out: Path) -> list[Row]:
    """Every row with the folder it will be evaluated from (nothing built yet)."""
    from aetheris.compress import spec_key
    from aetheris.teacher.load import display_name

    rows = [Row(display_name(cfg.teacher.model), "teacher", cfg.teacher.model, spec=cfg.teacher.model)]
    by_name = {TEACHER: rows[0]}
    for m in cfg.models:
        # A row whose folder is not here (built on a machine since gone) keeps its source: the
        # results folder may hold its scores, and the report takes them from there.
        if m.compress is None:
            absent = None if Path(m.path).exists() else f"{m.path} does not exist yet (optional row)"
            row = Row(m.name, m.method, m.path, spec=describe(m), missing=absent)
        else:
            base = by_name[m.of]
            row = Row(m.name, m.method, str(out / "models" / m.name), spec=describe(m),
                      key=spec_key(base.source, m.compress.method, m.compress.settings))  # fmt: skip
            if base.missing:
                row.missing = f"built from {m.of}, which is missing"
        rows.append(row)
        by_name[m.name] = row
    return rows


def build_row(cfg: StudyConfig, rows: list[Row], name: str) -> None:
    """Compress row `name` unless its folder already holds its spec; the teacher and student folders
    are not built. A composition's base must be built first: the study builds rows in config order."""
    from aetheris.compress import compress, read_record

    by_name = {r.name: r for r in rows} | {TEACHER: rows[0]}  # rows[0] is named as its model
    m = cfg.entry(name)
    row = by_name[name]
    if m is None or m.compress is None or row.missing:
        return
    folder = Path(row.source)
    try:
        if read_record(folder).spec_key == row.key:
            log.info("%s: cached in %s", name, folder)
            return
        log.info("%s: %s holds another spec; rebuilding", name, folder)
    except (FileNotFoundError, ValueError):
        pass
    base = by_name[m.of].source
    log.info("%s: building %s from %s", name, describe(m), base)
    compress(base, m.compress.method, m.compress.settings, folder, source=base)
    row.built = True
