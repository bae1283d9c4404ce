"""The `aetheris` command. Each subcommand lives beside the code it drives."""

from pathlib import Path
from typing import Annotated

import typer

from aetheris.languages import print_table as _languages_table

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.command()
def version() -> None:
    """Print the installed version."""
    from aetheris import __version__

    typer.echo(__version__)


app.command("languages", help="List the language registry (--tiny-aya-only for Tiny Aya's 70).")(_languages_table)


@app.command("report")
def report(
    results: Annotated[list[Path], typer.Argument(help="Results JSON files; the first is the teacher.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
    teacher: Annotated[Path | None, typer.Option(help="Teacher results (else the first file).")] = None,
    level: Annotated[str, typer.Option(help="Group languages by 'family' or 'group'.")] = "family",
    tokenizer: Annotated[list[str] | None, typer.Option(
        help="Tokenizer (local dir or hub id) for fertility; repeatable. "
        "Default: the teacher's model folder when it holds a tokenizer.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Benchmark data (holds flores_sib200/).")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
    n_perm: Annotated[int, typer.Option(help="Permutations for the family test.")] = 10000,
    seed: int = 0,
) -> None:
    """Equity report (report.md, report.html, results.json) of students against their teacher."""
    from aetheris.report.cli import run_report

    run_report(results, out, teacher=teacher, level=level, tokenizer=tokenizer or [], data_dir=data_dir,
               n_boot=n_boot, n_perm=n_perm, seed=seed)


@app.command("check-config")
def check_config(path: Annotated[Path, typer.Argument(help="Run config (YAML).")]) -> None:
    """Validate a distillation run config; every bad key is named."""
    from aetheris.distill.config import ConfigError, load_config

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{path}: ok (teacher {cfg.teacher.name}, student {cfg.student.layout}, output {cfg.output_dir})")
