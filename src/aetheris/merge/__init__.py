"""Model merging (Tiny Aya's region + global merge, Aya Expanse's methods) through mergekit."""

from aetheris.merge.config import (
    METHODS,
    MergeConfig,
    MergeConfigError,
    load_merge_config,
    parse_merge_config,
)
from aetheris.merge.run import merge

__all__ = ["METHODS", "MergeConfig", "MergeConfigError", "load_merge_config", "merge", "parse_merge_config"]
