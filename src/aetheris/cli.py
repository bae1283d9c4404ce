"""The `aetheris` command. Each subcommand lives beside the code it drives."""

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.command()
def version() -> None:
    """Print the installed version."""
    from aetheris import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    app()


# --- teacher (issue 5) ---
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
