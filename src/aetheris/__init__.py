"""Aetheris: compress multilingual LMs into a hybrid Mamba-2 + MoE student, and measure who paid.

Importing the package registers the student with transformers' Auto classes.
"""

from aetheris.model import AetherisConfig, AetherisForCausalLM, AetherisModel

__version__ = "0.1.0"
__all__ = ["AetherisConfig", "AetherisForCausalLM", "AetherisModel", "__version__"]
