"""The student's block norms: RMSNorm (the default) or LayerNorm, with or without bias, as the teacher's."""

from __future__ import annotations

from torch import nn

from .configuration import AetherisConfig
from .mixer import RMSNorm


def block_norm(config: AetherisConfig, dim: int | None = None) -> nn.Module:
    """A norm over `dim` features (default: hidden_size) of the config's `norm_type`."""
    dim = dim or config.hidden_size
    if config.norm_type == "layernorm":
        return nn.LayerNorm(dim, eps=config.rms_norm_eps, bias=config.norm_bias)
    return RMSNorm(dim, config.rms_norm_eps)
