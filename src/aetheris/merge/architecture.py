"""mergekit's architecture definition of the Aetheris student, registered under its class name.

Without one, mergekit infers templates from tensor names: every weight of one block kind turns
`optional` (absent from the other kinds' layers), so a missing tensor passes silently, and the
output folder lacks the modeling code that `auto_map` points at. This definition reads the layer
layout from the config, so each layer lists exactly its block's tensors and none is optional:

    S (Mamba-2 mixer)  norm, mixer.{in_proj, conv1d.weight, conv1d.bias, dt_bias, A_log, D, norm, out_proj}
    M (MoE)            norm, mixer.router, mixer.experts.{0..num_experts-1}.{gate,up,down}_proj
    A (attention)      norm, mixer.{q,k,v,o}_proj (+ q_norm/k_norm, biases where the config has them)

The names come from one block built on the meta device (no memory, no init), so every config
option (post norms, biases, LayerNorm, ungated MLPs) is covered by the model's own code. The
output copies the donor's modeling `.py` files (tagalong_files), so it loads with
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` where aetheris is absent.
Merging expert i of one student with expert i of another assumes they share an ancestry (region
students fine-tuned from one global student do); it does not match experts across unrelated runs.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch
from mergekit.architecture import ModelArchitecture, ModuleArchitecture, ModuleDefinition, WeightInfo
from mergekit.architecture.json_definitions import NAME_TO_ARCH
from pydantic import BaseModel
from transformers import PretrainedConfig

from aetheris.model import AetherisConfig, AetherisForCausalLM

ARCHITECTURE = AetherisForCausalLM.__name__
EMBED = "model.embed_tokens.weight"


@lru_cache(maxsize=8)
def _tensor_names(config_json: str) -> tuple[str, ...]:
    """Every tensor the model saves for this config, in state-dict order."""
    config = AetherisConfig.from_dict(json.loads(config_json))
    with torch.device("meta"):
        model = AetherisForCausalLM(config)
    names = list(model.state_dict())
    if config.tie_word_embeddings:  # transformers saves a tied head once, as the embedding
        names = [n for n in names if n != "lm_head.weight"]
    return tuple(names)


def _names(config: PretrainedConfig) -> tuple[str, ...]:
    return _tensor_names(json.dumps(config.to_dict(), sort_keys=True, default=str))


class AetherisModuleArchitecture(ModuleArchitecture, BaseModel, frozen=True):
    """One module: embeddings, then the layout's blocks, then the final norm and the head."""

    def name(self) -> str:
        return "aetheris"

    def num_layers_config_key(self) -> str:
        return "num_hidden_layers"

    def pre_weights(self, config: PretrainedConfig) -> list[WeightInfo]:
        return [WeightInfo(name=EMBED, vocabulary_axis=0)]

    def layer_weights(self, index: int, config: PretrainedConfig) -> list[WeightInfo]:
        prefix = f"model.layers.{index}."
        return [WeightInfo(name=n) for n in _names(config) if n.startswith(prefix)]

    def post_weights(self, config: PretrainedConfig) -> list[WeightInfo]:
        out = []
        for n in _names(config):
            if n.startswith("model.layers.") or n == EMBED:
                continue
            if n.startswith("lm_head."):  # untied head (and its bias): indexed by token like the embedding
                out.append(WeightInfo(name=n, vocabulary_axis=0))
            else:
                out.append(WeightInfo(name=n))
        return out


def aetheris_architecture(code_files: list[str]) -> ModelArchitecture:
    return ModelArchitecture(
        modules={"default": ModuleDefinition(architecture=AetherisModuleArchitecture())},
        architectures=[ARCHITECTURE],
        model_type=AetherisConfig.model_type,
        tagalong_files=code_files,
    )


def register(donor: Path) -> ModelArchitecture:
    """Make mergekit use the Aetheris definition, copying `donor`'s modeling code to the output.

    mergekit looks definitions up by architecture name in NAME_TO_ARCH (its registry of the JSON
    definitions it ships); registering again replaces the entry, so each merge names its donor."""
    code = sorted(p.name for p in Path(donor).glob("*.py"))
    arch = aetheris_architecture(code)
    NAME_TO_ARCH[ARCHITECTURE] = [arch]
    return arch
