"""`aetheris data`: what a set of training sources holds, and the language mixture it would give."""

from __future__ import annotations

from pathlib import Path

from aetheris.data.mixture import language_weights
from aetheris.data.sources import LoadSummary, embedded_corpus, read_sources


def print_data_summary(sources: list[str | Path], tau: float = 0.3, chat: bool = False) -> LoadSummary:
    """Read the sources (or the embedded corpus), print rows and p(lang) per language, then skips."""
    from rich.console import Console
    from rich.table import Table

    summary = LoadSummary()
    if sources:
        read_sources(sources, summary)
    else:
        embedded_corpus("chat" if chat else "text", summary)
    weights = language_weights(summary.kept, tau) if summary.kept else {}
    table = Table(title=f"{summary.n_kept} rows in {len(summary.kept)} languages; p(lang) ∝ n^{tau}")
    for column in ("lang", "rows", "p(lang)"):
        table.add_column(column, justify="left" if column == "lang" else "right")
    for lang, n in sorted(summary.kept.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(lang, str(n), f"{weights[lang]:.4f}")
    console = Console()
    console.print(table)
    summary.report()
    return summary
