"""One-shot compression baselines: quantisation, pruning, layer removal and vocabulary trimming.

`compress(model, method, settings, out_dir) -> CompressionRecord`; `aetheris compress` on the CLI.
"""

from aetheris.compress.api import (
    CompressionRecord,
    apply_method,
    compress,
    load_compressed,
    read_record,
    spec_key,
    write_compressed,
)
from aetheris.compress.registry import SettingsError, get_method, method_names, parse_settings

__all__ = [
    "CompressionRecord",
    "SettingsError",
    "apply_method",
    "compress",
    "get_method",
    "load_compressed",
    "method_names",
    "parse_settings",
    "read_record",
    "spec_key",
    "write_compressed",
]
