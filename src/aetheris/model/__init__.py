"""The Aetheris student: hybrid Mamba-2 SSM + sparse MoE causal LM."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from aetheris.model.configuration import AetherisConfig
from aetheris.model.modeling import AetherisForCausalLM, AetherisModel

AutoConfig.register("aetheris", AetherisConfig, exist_ok=True)
AutoModel.register(AetherisConfig, AetherisModel, exist_ok=True)
AutoModelForCausalLM.register(AetherisConfig, AetherisForCausalLM, exist_ok=True)

__all__ = ["AetherisConfig", "AetherisForCausalLM", "AetherisModel"]
