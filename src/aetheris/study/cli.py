"""`aetheris study STUDY.yaml`: the command-line side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def study_cmd(
    config: Annotated[Path, typer.Argument(help="Study config (YAML), e.g. configs/study-demo.yaml.")],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Output folder (default: the config's out).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Only validate the config; build and run nothing.")] = False,
    scored_only: Annotated[bool, typer.Option("--scored-only", help="Build and score nothing: report the rows "
                                              "already scored (a stopped study's), the others as not scored yet.")] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="Build and score only this row (repeat the "
                                                   "option for more; the teacher is always scored); "
                                                   "report the others as --scored-only does.")] = None,
) -> None:
    """Compare a teacher, its compressed versions and students on one profile: one equity report."""
    from aetheris.study.build import plan_rows
    from aetheris.study.config import load_study

    cfg = load_study(config)  # every key checked before any model is built or loaded
    if check:
        rows = plan_rows(cfg, Path(out or cfg.out))
        missing = sum(1 for r in rows if r.missing)
        typer.echo(f"{config}: ok ({len(rows)} models, {missing} missing; profile {cfg.profile})")
        return
    from aetheris.study.run import run_study

    try:
        report = run_study(cfg, out, scored_only=scored_only, only=only)
    except (ValueError, FileNotFoundError) as e:  # e.g. a build that a model cannot take
        from aetheris.errors import UserError

        if isinstance(e, UserError):
            raise
        raise UserError(f"{config}: {e}") from e
    for name in ("report.md", "report.html", "results.json"):
        typer.echo(str(report / name))
