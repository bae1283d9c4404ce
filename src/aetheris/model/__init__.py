"""The Aetheris student: hybrid Mamba-2 SSM + sparse MoE causal LM.

Two ways in: `import aetheris` registers the classes with transformers' Auto classes, and
`save_pretrained` writes this package's code beside the weights with an `auto_map` in config.json,
so `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` loads a student in a
program that never imports aetheris (lm-eval, plain transformers). That is why the modules here
import each other relatively and nothing outside torch, transformers and the standard library.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration import AetherisConfig
from .modeling import AetherisForCausalLM, AetherisModel

AutoConfig.register("aetheris", AetherisConfig, exist_ok=True)
AutoModel.register(AetherisConfig, AetherisModel, exist_ok=True)
AutoModelForCausalLM.register(AetherisConfig, AetherisForCausalLM, exist_ok=True)

AetherisConfig.register_for_auto_class()
AetherisModel.register_for_auto_class("AutoModel")
AetherisForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["AetherisConfig", "AetherisForCausalLM", "AetherisModel"]
