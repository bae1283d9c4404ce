"""The `aetheris` command. Each subcommand lives beside the code it drives."""

import typer

from aetheris.languages import print_table as _languages_table

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.command()
def version() -> None:
    """Print the installed version."""
    from aetheris import __version__

    typer.echo(__version__)


app.command("languages", help="List the language registry (--tiny-aya-only for Tiny Aya's 70).")(_languages_table)
