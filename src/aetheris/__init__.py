"""Aetheris: compress multilingual LMs into a hybrid Mamba-2 + MoE student, and measure who paid.

Importing the package registers the student with transformers' Auto classes.
"""

import logging as _logging

# transformers imports torchao where it is installed: torchao warns once per optional CUDA kernel a
# CPU build cannot load, and torch that torchao registers enums the deprecated way. Every command
# printed these lines before its own output; they are not the user's concern.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)

from aetheris.model import AetherisConfig, AetherisForCausalLM, AetherisModel  # noqa: E402

__version__ = "0.1.0"
__all__ = ["AetherisConfig", "AetherisForCausalLM", "AetherisModel", "__version__"]
