"""The `aetheris` command. Each subcommand lives beside the code it drives."""

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.command()
def version() -> None:
    """Print the installed version."""
    from aetheris import __version__

    typer.echo(__version__)


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


if __name__ == "__main__":
    app()
