"""`python -m aetheris` is the `aetheris` command."""

from aetheris.cli import app

app()
