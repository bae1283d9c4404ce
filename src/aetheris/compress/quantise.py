"""Weight-only integer quantisation through torchao, saved and loaded by transformers' TorchAoConfig.

`int8`: one scale per output row (`Int8WeightOnlyConfig`). `int4`: one scale and zero point per
group of `group_size` inputs (`IntxWeightOnlyConfig(weight_dtype=torch.int4, PerGroup(g))`). Both
run on CPU, and both tensor types are ones torchao's safetensors support flattens into plain
tensors plus JSON metadata, so the folder holds no pickle and `AutoModelForCausalLM.from_pretrained`
rebuilds the quantised modules with the same integers and scales (no project hook needed).
The prototype CPU int4 config (`Int4OpaqueTensor`, packed for the tinygemm CPU kernel) is faster in
bf16 but its tensors cannot be written to safetensors in torchao 0.18; see the README.
The blocks' linear layers are quantised; embeddings, the head and MoE routers stay as they are.
"""

from __future__ import annotations

import tempfile
from typing import Literal

import torch
from torch import nn

from aetheris.compress.prune import decoder_blocks, prunable_linears
from aetheris.compress.registry import CompressionMethod, MethodSettings, Outcome


class Int8Settings(MethodSettings):
    pass


class Int4Settings(MethodSettings):
    group_size: Literal[32, 64, 128, 256] = 128


def _targets(model: nn.Module, group_size: int | None) -> tuple[list[str], list[str]]:
    """(linear layers to quantise, every other linear layer) by full module name."""
    blocks = decoder_blocks(model)
    chosen = {id(m) for block in blocks for m in prunable_linears(block).values()}
    quantise, keep = [], []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            fits = group_size is None or m.in_features % group_size == 0
            (quantise if id(m) in chosen and fits else keep).append(name)
    return quantise, keep


def quantise(model: nn.Module, tokenizer, quant_type, group_size: int | None) -> Outcome:
    """Reload `model` through transformers with a TorchAoConfig, which quantises while loading."""
    from transformers import TorchAoConfig

    quantised, kept = _targets(model, group_size)
    if not quantised:
        raise ValueError(f"no linear layer of {type(model).__name__} can be quantised "
                         f"(group_size={group_size} divides no input width)")  # fmt: skip
    config = TorchAoConfig(quant_type=quant_type, modules_to_not_convert=kept)
    with tempfile.TemporaryDirectory(prefix="aetheris-quant-") as tmp:
        model.save_pretrained(tmp)
        out = type(model).from_pretrained(tmp, quantization_config=config, dtype=model.dtype)
    details = {"quantised_layers": len(quantised), "kept_linear_layers": kept,
               "weight_bits": 8 if group_size is None else 4, "group_size": group_size}  # fmt: skip
    return Outcome(out.eval(), tokenizer, details)


class Int8(CompressionMethod):
    name = "int8"
    Settings = Int8Settings
    summary = "weight-only int8, one scale per output row (torchao)"

    def apply(self, model, tokenizer, settings: Int8Settings) -> Outcome:
        from torchao.quantization import Int8WeightOnlyConfig

        return quantise(model, tokenizer, Int8WeightOnlyConfig(), None)


class Int4(CompressionMethod):
    name = "int4"
    Settings = Int4Settings
    summary = "weight-only int4, per group of 32..256 inputs (torchao IntxWeightOnlyConfig)"

    def apply(self, model, tokenizer, settings: Int4Settings) -> Outcome:
        from torchao.quantization import IntxWeightOnlyConfig, PerGroup

        config = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(settings.group_size))
        return quantise(model, tokenizer, config, settings.group_size)
