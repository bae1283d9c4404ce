"""Multilingual arbitrage (Odumakinde et al.): a pool answers each prompt, an arbiter keeps one reply."""

from aetheris.arbitrage.config import load_settings, parse_settings
from aetheris.arbitrage.run import run_arbitrage

__all__ = ["load_settings", "parse_settings", "run_arbitrage"]
