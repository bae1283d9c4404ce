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


@app.command("validate-tools")
def validate_tools(paths: list[str]) -> None:
    """Check tool-calling JSONL files: the item format, and every gold call against its tool's schema."""
    from aetheris.toolcall.format import ItemError, read_items

    failed = False
    for path in paths:
        try:
            items = read_items(path)
        except (ItemError, OSError) as e:
            typer.echo(f"FAIL {e}", err=True)
            failed = True
            continue
        typer.echo(f"ok   {path}: {len(items)} items")
    if failed:
        raise typer.Exit(1)


teacher_app = typer.Typer(no_args_is_help=True, help="Load and inspect teacher models.")
app.add_typer(teacher_app, name="teacher")


@teacher_app.command("info")
def teacher_info(
    source: str = typer.Argument(..., help="Embedded name, .gguf file, model directory or hub id."),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16."),
    cache_dir: str = typer.Option(None, help="GGUF cache (default $AETHERIS_CACHE/teachers)."),
) -> None:
    """Print what the student initialiser will read from a teacher."""
    from aetheris.teacher import introspect, load_teacher
    from aetheris.teacher.summary import print_spec

    loaded = load_teacher(source, dtype=dtype, cache_dir=cache_dir)
    cached = " (from cache)" if loaded.from_cache else ""
    typer.echo(f"loaded {loaded.source} in {loaded.seconds:.1f}s{cached}")
    print_spec(introspect(loaded.model))
