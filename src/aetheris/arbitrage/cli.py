"""`aetheris arbitrage CONFIG -o data.jsonl`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def arbitrage_cmd(
    config: Annotated[Path, typer.Argument(help="Arbitrage YAML: pool, prompts, generation, checks, arbiter.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output SFT JSONL (appended; a rerun resumes).")],
) -> None:
    """Turn prompts into an SFT set: the pool answers, an arbiter keeps the best reply per prompt."""
    from aetheris.arbitrage.config import load_settings
    from aetheris.arbitrage.run import print_summary, run_arbitrage, sidecar

    settings, arbiter = load_settings(config)  # every key checked before a model loads
    summary = run_arbitrage(settings, arbiter, out)
    print_summary(summary, [m.label for m in settings.pool])
    typer.echo(f"{out}: {summary['rows']} rows ({summary['rejected']} prompts rejected, "
               f"{summary['resumed_done']} done before); summary in {sidecar(out, 'summary.json')}")  # fmt: skip
