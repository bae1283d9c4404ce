"""Weight-only integer quantisation through torchao, saved and loaded by transformers' TorchAoConfig.

`int8`: one scale per output row (`Int8WeightOnlyConfig`). `int4`: one scale and zero point per
group of `group_size` inputs (`IntxWeightOnlyConfig(weight_dtype=torch.int4, PerGroup(g))`). Both
run on CPU, and both tensor types are ones torchao's safetensors support flattens into plain
tensors plus JSON metadata, so the folder holds no pickle and `AutoModelForCausalLM.from_pretrained`
rebuilds the quantised modules with the same integers and scales (no project hook needed).
The prototype CPU int4 config (`Int4OpaqueTensor`, packed for the tinygemm CPU kernel) is faster in
bf16 but its tensors cannot be written to safetensors in torchao 0.18; see the README.
The blocks' linear layers are quantised; MoE routers stay as they are, and so do the input
embedding and the head unless `embeddings=true`.

`embeddings=true` also quantises the input embedding and the head, as deployed quantisations
(llama.cpp's q8_0/q4 files) do: the table gets `IntxWeightOnlyConfig` (int8 with one scale per row,
i.e. per token, or int4 per group like the linears; torchao's `Int8Tensor` has no embedding op),
an untied head the linears' config. It goes through TorchAoConfig's
`include_input_output_embeddings`, with an `FqnToConfig` naming each weight: with a plain config,
transformers 5.24 runs `quantize_` with its nn.Linear-only default filter and leaves the table float.
A tied head stays tied: one quantised tensor serves both, and it is stored once. Transformers'
own `untie_embedding_weights=True` is not used: in 5.24 it hands the head a float copy of the
table (the stored embedding doubles: int8 table + fp32 head, larger than the fp32 tied original)
and the reload then fails in `tie_weights` (`torch.equal` is not implemented for torchao tensors).
Two fixes keep the folder loadable by plain `from_pretrained`:
- the tied tensor is written once, under the head's name: transformers 5.24 flattens the state
  dict before removing tied keys, so it would write both copies and the reload fails as above;
- on load transformers marks a quantised module initialised and skips its `_init_weights`, which
  also sets non-persistent buffers (Gemma 3's `embed_scale`). Stored under the head's name, the
  embedding module is tied rather than loaded, so it is initialised. An untied table with such a
  buffer cannot be saved that way and is refused (`SettingsError`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from aetheris.compress.prune import decoder_blocks, prunable_linears
from aetheris.compress.registry import CompressionMethod, MethodSettings, Outcome, SettingsError


class Int8Settings(MethodSettings):
    embeddings: bool = False  # also the input embedding and the head


class Int4Settings(MethodSettings):
    group_size: Literal[32, 64, 128, 256] = 128
    embeddings: bool = False


@dataclass(frozen=True)
class Tables:
    """The input embedding and head of a model, by module name."""

    embedding: str
    head: str
    tied: bool


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


def find_tables(model: nn.Module, method: str, group_size: int | None) -> Tables:
    """The embedding and head to quantise; a one-line SettingsError where transformers' path can't."""
    where = f"{method} setting embeddings=true"
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if not isinstance(emb, nn.Embedding) or not isinstance(head, nn.Linear):
        raise SettingsError(f"{where}: {type(model).__name__} has no nn.Embedding input and nn.Linear head")
    names = {id(m): n for n, m in model.named_modules()}
    tables = Tables(names[id(emb)], names[id(head)], emb.weight is head.weight)
    if group_size is not None and emb.embedding_dim % group_size:
        raise SettingsError(f"{where}: group_size={group_size} does not divide the embedding width "
                            f"{emb.embedding_dim} ({tables.embedding})")  # fmt: skip
    buffers = [n for n, _ in emb.named_buffers()]
    if buffers and not tables.tied:
        raise SettingsError(
            f"{where}: {tables.embedding} ({type(emb).__name__}) has buffers ({', '.join(buffers)}) that "
            "transformers 5.24 leaves uninitialised when it loads a quantised, untied embedding, so the "
            "saved folder would not reload correctly"
        )
    return tables


def _store_tied_once(model: nn.Module, tables: Tables) -> None:
    """Make `save_pretrained` write the tied tensor once, under the head's name (see the docstring)."""
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    drop = f"{tables.embedding}.weight"

    def state_dict_and_metadata(m: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        return flatten_tensor_state_dict({k: v for k, v in m.state_dict().items() if k != drop})

    model.hf_quantizer.get_state_dict_and_metadata = state_dict_and_metadata


def _restore_buffers(source: nn.Module, out: nn.Module, tables: Tables) -> None:
    """The quantised embedding module skipped `_init_weights`: copy its buffers from the source."""
    with torch.no_grad():
        for name, buf in source.get_submodule(tables.embedding).named_buffers():
            out.get_submodule(tables.embedding).get_buffer(name).copy_(buf)


def _embedding_details(tables: Tables, group_size: int | None) -> dict[str, Any]:
    grid = "one scale per row (token)" if group_size is None else f"per group of {group_size}"
    stored = (f"once, as {tables.head}.weight; {tables.embedding} is tied to it on load" if tables.tied
              else f"two tensors, {tables.embedding}.weight and {tables.head}.weight")  # fmt: skip
    return {"quantised": [tables.embedding, tables.head], "tied": tables.tied, "grid": grid, "stored": stored}


def quantise(model: nn.Module, tokenizer: Any, method: str, linear: Any, table: Any,
             group_size: int | None, embeddings: bool) -> Outcome:  # fmt: skip
    """Reload `model` through transformers with a TorchAoConfig, which quantises while loading.
    `linear` is the torchao config of the linear layers, `table` that of the embedding table."""
    from torchao.quantization import FqnToConfig
    from transformers import TorchAoConfig

    quantised, kept = _targets(model, group_size)
    if not quantised:
        raise ValueError(f"no linear layer of {type(model).__name__} can be quantised "
                         f"(group_size={group_size} divides no input width)")  # fmt: skip
    details: dict[str, Any] = {"weight_bits": 8 if group_size is None else 4, "group_size": group_size}
    if embeddings:
        tables = find_tables(model, method, group_size)
        kept = [k for k in kept if k != tables.head]
        # Keyed by weight, not module: a module key would also quantise the layer's bias.
        per_weight = {f"{n}.weight": linear for n in quantised} | {f"{tables.embedding}.weight": table}
        if not tables.tied:
            per_weight[f"{tables.head}.weight"] = linear
        config = TorchAoConfig(quant_type=FqnToConfig(per_weight), modules_to_not_convert=kept,
                               include_input_output_embeddings=True)  # fmt: skip
        details["embeddings"] = _embedding_details(tables, group_size)
    else:
        config = TorchAoConfig(quant_type=linear, modules_to_not_convert=kept)
    with tempfile.TemporaryDirectory(prefix="aetheris-quant-") as tmp:
        model.save_pretrained(tmp)
        out = type(model).from_pretrained(tmp, quantization_config=config, dtype=model.dtype)
    if embeddings:
        _restore_buffers(model, out, tables)
        if tables.tied:
            _store_tied_once(out, tables)
    details = {"quantised_layers": len(quantised), "kept_linear_layers": kept, **details}
    return Outcome(out.eval(), tokenizer, details)


class Int8(CompressionMethod):
    name = "int8"
    Settings = Int8Settings
    summary = "weight-only int8, one scale per output row (torchao)"

    def apply(self, model, tokenizer, settings: Int8Settings) -> Outcome:
        from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerAxis

        table = IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))  # a scale per token
        return quantise(model, tokenizer, self.name, Int8WeightOnlyConfig(), table, None, settings.embeddings)


class Int4(CompressionMethod):
    name = "int4"
    Settings = Int4Settings
    summary = "weight-only int4, per group of 32..256 inputs (torchao IntxWeightOnlyConfig)"

    def apply(self, model, tokenizer, settings: Int4Settings) -> Outcome:
        from torchao.quantization import IntxWeightOnlyConfig, PerGroup

        config = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(settings.group_size))
        return quantise(model, tokenizer, self.name, config, config, settings.group_size, settings.embeddings)
