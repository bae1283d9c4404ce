"""ShortGPT (Men et al. 2024): remove the blocks that change the residual stream least.

Block influence, 1 - cos(x_in, x_out) averaged over calibration tokens, is the one in
`aetheris.distill.layer_map`. The model is rebuilt from a config with fewer layers (per-layer
config lists such as Gemma's `layer_types`, or a student's layout letters, follow the kept blocks)
and the kept blocks' weights are loaded under their new indices.
"""

from __future__ import annotations

import copy
import re

import torch
from pydantic import Field, model_validator
from torch import nn

from aetheris.compress.calibration import CalibrationSettings, calibration_batch
from aetheris.compress.prune import CAPTURE_BATCH, block_list, decoder_blocks
from aetheris.compress.registry import CompressionMethod, Outcome
from aetheris.distill.calibration import influence_scores


class ShortGPTSettings(CalibrationSettings):
    n_layers: int | None = Field(None, ge=1)
    # round(fraction · layers), at least one
    fraction: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_of(self) -> ShortGPTSettings:
        if (self.n_layers is None) == (self.fraction is None):
            raise ValueError("give exactly one of n_layers (a count) or fraction (of the layers)")
        return self


@torch.no_grad()
def block_influence_of(model: nn.Module, input_ids: torch.Tensor) -> list[float]:
    """Per-block influence over all calibration rows (mini-batches weighted by their rows)."""
    total = None
    for start in range(0, input_ids.shape[0], CAPTURE_BATCH):
        rows = input_ids[start : start + CAPTURE_BATCH]
        scores = torch.tensor(influence_scores(model, rows)) * rows.shape[0]
        total = scores if total is None else total + scores
    return (total / input_ids.shape[0]).tolist()


# Lists that may have num_hidden_layers entries by chance (two eos ids, a 2-layer model).
NOT_PER_LAYER = {"architectures", "bos_token_id", "eos_token_id", "pad_token_id"}


def _shorter_config(config, keep: list[int], n_layers: int):
    config = copy.deepcopy(config)
    if getattr(config, "model_type", "") == "aetheris":
        a_index = [config.layout[:i].count("A") for i in range(n_layers)]
        kept_a = [a_index[i] for i in keep if config.layout[i] == "A"]
        config.attn_sliding = [config.attn_sliding[a] for a in kept_a]
        config.attn_rope_theta = [config.attn_rope_theta[a] for a in kept_a]
        config.layout = "".join(config.layout[i] for i in keep)
    else:
        for key, value in list(vars(config).items()):  # per-layer lists, e.g. layer_types
            if isinstance(value, list) and len(value) == n_layers and key not in NOT_PER_LAYER:
                setattr(config, key, [value[i] for i in keep])
    config.num_hidden_layers = len(keep)
    return config


def remove_blocks(model: nn.Module, drop: list[int]) -> nn.Module:
    """A new model of the same class without the blocks in `drop`, every other weight unchanged.
    Built from the shorter config, so each kept layer (and its attention's `layer_idx`, the cache
    slot it writes) is numbered by its new position."""
    prefix, blocks = block_list(model)
    n = len(blocks)
    keep = [i for i in range(n) if i not in set(drop)]
    new_index = {old: new for new, old in enumerate(keep)}
    state = {}
    for key, value in model.state_dict().items():
        match = re.match(rf"({re.escape(prefix)}\.)(\d+)(\..*)", key)
        if match is None:
            state[key] = value
        elif int(match[2]) in new_index:
            state[f"{match[1]}{new_index[int(match[2])]}{match[3]}"] = value
    out = type(model)._from_config(_shorter_config(model.config, keep, n), dtype=model.dtype)
    out.load_state_dict(state, strict=True)
    out.generation_config = copy.deepcopy(model.generation_config)
    return out.eval()


class ShortGPT(CompressionMethod):
    name = "shortgpt"
    Settings = ShortGPTSettings
    summary = "remove the n (or a fraction of) blocks of lowest block influence"

    def apply(self, model, tokenizer, settings: ShortGPTSettings) -> Outcome:
        n = len(decoder_blocks(model))
        k = settings.n_layers if settings.n_layers is not None else max(1, round(settings.fraction * n))
        if not 1 <= k < n:
            raise ValueError(f"shortgpt would remove {k} of {n} layers: expected 1..{n - 1}")
        input_ids, calibration = calibration_batch(tokenizer, settings)
        influence = block_influence_of(model, input_ids)
        drop = sorted(sorted(range(n), key=lambda i: influence[i])[:k])
        details = {"removed_layers": drop, "block_influence": influence, "layers_before": n,
                   "layers_after": n - k}  # fmt: skip
        return Outcome(remove_blocks(model, drop), tokenizer, details, calibration)
