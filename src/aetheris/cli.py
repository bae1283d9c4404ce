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
