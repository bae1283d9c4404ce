"""`aetheris compress MODEL --method NAME [--set key=value ...] -o DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml


def parse_sets(pairs: list[str]) -> dict[str, object]:
    """`key=value` pairs; values read as YAML scalars (0.5, true, 2:4 stays a string)."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {pair!r}: expected key=value")
        parsed = yaml.safe_load(value) if value.strip() else None
        # YAML would read 2:4 as a sexagesimal int and 'en' strings fine; keep N:M as written.
        out[key.strip()] = value if ":" in value else parsed
    return out


def compress_cmd(
    model: Annotated[
        str, typer.Argument(help="A teacher (any name `aetheris teacher info` accepts) or a student folder.")
    ],
    method: Annotated[
        str,
        typer.Option("--method", "-m", help="int8, int4, magnitude, wanda, sparsegpt, shortgpt, vocab-trim."),
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output model folder.")],
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="A method setting, key=value; repeatable.")
    ] = None,
) -> None:
    """Compress a model with one method; writes an HF model folder and compression.json."""
    from aetheris.compress import SettingsError, compress, parse_settings

    try:
        settings = parse_settings(method, parse_sets(sets or []))
    except (SettingsError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    try:
        record = compress(model, method, settings, out)
    except (ValueError, KeyError, FileNotFoundError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{out}: {method} in {record.seconds:.1f}s, {record.bytes_on_disk:,} bytes, "
               f"{record.parameters:,} parameters ({record.nonzero_parameters:,} non-zero), "
               f"{record.bits_per_weight:.2f} bits/weight")  # fmt: skip
