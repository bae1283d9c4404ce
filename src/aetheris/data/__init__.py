"""Training data: sources (JSONL, Parquet, HF datasets), balanced mixtures, chat formatting.

`languages.json` (the language registry) and `corpus/` (the bundled sample corpus) live here too.
"""

from aetheris.data.sources import Example, LoadSummary, embedded_corpus, read_source, read_sources

__all__ = ["Example", "LoadSummary", "embedded_corpus", "read_source", "read_sources"]
