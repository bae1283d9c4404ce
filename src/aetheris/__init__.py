"""Aetheris: compress multilingual LMs into a hybrid Mamba-2 + MoE student, and measure who paid."""

__version__ = "0.1.0"
