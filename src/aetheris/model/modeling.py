"""Aetheris as a transformers model: pre-norm residual blocks named by the layout string."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput
from transformers.utils.deprecation import deprecate_kwarg

from .attention import Attention
from .configuration import AetherisConfig
from .mixer import SSMMixer
from .moe import MoE, weighted_router_loss
from .norm import block_norm


@dataclass
class AetherisModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None


@dataclass
class AetherisCausalLMOutput(ModelOutput):
    """`loss` = cross-entropy + `router_loss`, where `router_loss` = router_aux_loss_coef * aux_loss
    + router_z_loss_coef * z_loss (set in training or with labels; other losses add it the same way)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None
    aux_loss: torch.Tensor | None = None
    z_loss: torch.Tensor | None = None
    router_loss: torch.Tensor | None = None


class AetherisCache(DynamicCache):
    """transformers' DynamicCache (SSM blocks: conv window + state; A blocks: KV) that also counts
    tokens, since a layout without attention has no KV length to ask (generate() asks)."""

    def __init__(self, config: AetherisConfig, **kwargs) -> None:
        super().__init__(config=config, **kwargs)
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        if any(isinstance(layer, CacheLayerMixin) for layer in self.layers):
            return super().get_seq_length(layer_idx)
        return self.seen_tokens


class AetherisBlock(GradientCheckpointingLayer):
    """x + m * post_norm(mixer(norm(x))), where the mixer is an SSM, an MoE or an attention block.

    `norm` is the identity without `pre_norm` (OLMo 2), `post_norm` exists with `post_norm`
    (Gemma's sandwich, OLMo 2), m is `residual_multiplier` (Granite). A parallel pair (Cohere, Phi)
    passes `branch_input`: the branch then reads the pair's input instead of the stream."""

    def __init__(self, config: AetherisConfig, layer_idx: int) -> None:
        super().__init__()
        self.kind = config.layout[layer_idx]
        self.norm = block_norm(config) if config.pre_norm else nn.Identity()
        self.residual_multiplier = config.residual_multiplier
        if self.kind == "S":
            self.mixer = SSMMixer(config, layer_idx)
        elif self.kind == "M":
            self.mixer = MoE(config, layer_idx)
        else:
            sliding = config.attn_sliding[config.layout[:layer_idx].count("A")]
            self.mixer = Attention(config, layer_idx, sliding)
        self.post_norm = block_norm(config) if config.post_norm else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        cache: Cache | None = None,
        branch_input: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.norm(hidden_states if branch_input is None else branch_input)
        router_logits = None
        if self.kind == "S":
            step_mask = None if attention_mask is None else attention_mask[:, -h.shape[1] :]
            h = self.mixer(h, step_mask, cache)
        elif self.kind == "M":
            h, router_logits = self.mixer(h)
        else:
            h = self.mixer(h, positions, attention_mask, cache)
        if self.post_norm is not None:
            h = self.post_norm(h)
        if self.residual_multiplier != 1.0:
            h = h * self.residual_multiplier
        return hidden_states + h, router_logits


class AetherisPreTrainedModel(PreTrainedModel):
    config_class = AetherisConfig
    config: AetherisConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["AetherisBlock"]
    _is_stateful = True  # SSM state cannot be rolled back: no assisted decoding

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        # custom_object_save puts only the saved class in auto_map; name the base model too, so
        # AutoModel (not only AutoModelForCausalLM) loads the folder with trust_remote_code.
        if self.is_remote_code():
            module = AetherisModel.__module__.rsplit(".", 1)[-1]
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": f"{module}.AetherisModel",
            }
        return super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, SSMMixer):
            module.reset_ssm_parameters()
            init.kaiming_uniform_(module.conv1d.weight, a=5**0.5)
            init.zeros_(module.conv1d.bias)


class AetherisModel(AetherisPreTrainedModel):
    def __init__(self, config: AetherisConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(AetherisBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = block_norm(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> AetherisModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if not use_cache:
            cache = None
        elif cache is None:
            cache = AetherisCache(self.config)

        positions = None
        if "A" in self.config.layout:
            if position_ids is None:
                past = cache.get_seq_length() if cache is not None else 0
                position_ids = torch.arange(past, past + inputs_embeds.shape[1], device=inputs_embeds.device)
            positions = position_ids.expand(inputs_embeds.shape[0], -1)

        h = inputs_embeds * self.config.embed_scale
        all_hidden, all_router = [], []
        pair_input = None  # with parallel_residual: the input of the S/A block an M block pairs with
        for layer in self.layers:
            if output_hidden_states:
                all_hidden.append(h)
            block_input = h
            h, router_logits = layer(
                h, attention_mask=attention_mask, positions=positions, cache=cache,
                branch_input=pair_input if layer.kind == "M" else None,
            )  # fmt: skip
            pair_input = block_input if self.config.parallel_residual and layer.kind in "SA" else None
            if router_logits is not None:
                all_router.append(router_logits)
        h = self.norm(h)
        if isinstance(cache, AetherisCache):
            cache.seen_tokens += inputs_embeds.shape[1]
        if output_hidden_states:
            all_hidden.append(h)
        return AetherisModelOutput(
            last_hidden_state=h,
            cache=cache,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            router_logits=tuple(all_router),
        )


class AetherisForCausalLM(AetherisPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: AetherisConfig) -> None:
        super().__init__(config)
        self.model = AetherisModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=config.lm_head_bias)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        # generate() would build a plain DynamicCache; ours also counts tokens (see AetherisCache).
        if (
            model_kwargs.get("cache") is None
            and generation_config.use_cache is not False
            and generation_config.cache_implementation in (None, "dynamic")
        ):
            model_kwargs["cache"] = AetherisCache(self.config)
        return super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> AetherisCausalLMOutput:
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        h = out.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(h[:, keep]) * self.config.logit_scale
        if self.config.final_logit_softcapping is not None:
            cap = self.config.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap

        aux_loss = z_loss = router_loss = loss = None
        if out.router_logits and (labels is not None or self.training):  # not needed to decode
            mask = None
            if attention_mask is not None:
                mask = attention_mask[:, -h.shape[1] :].reshape(-1)
            aux_loss, z_loss, router_loss = weighted_router_loss(list(out.router_logits), self.config, mask)
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )
            if router_loss is not None:
                loss = loss + router_loss
        return AetherisCausalLMOutput(
            loss=loss,
            logits=logits,
            cache=out.cache,
            hidden_states=out.hidden_states,
            router_logits=out.router_logits,
            aux_loss=aux_loss,
            z_loss=z_loss,
            router_loss=router_loss,
        )

    def expert_utilisation(self) -> dict[int, list[float]]:
        """Per MoE block (by layer index): the fraction of tokens each expert took in the last forward."""
        stats = {}
        for i, layer in enumerate(self.model.layers):
            if layer.kind == "M":
                counts = layer.mixer.last_tokens_per_expert.float()
                stats[i] = (counts / counts.sum().clamp(min=1)).tolist()
        return stats

    def active_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameters one token passes through: all but the experts it is not routed to."""
        total = self.num_parameters(exclude_embeddings=exclude_embeddings)
        k, n = self.config.num_experts_per_tok, self.config.num_experts
        for layer in self.model.layers:
            if layer.kind == "M":
                per_expert = sum(p.numel() for p in layer.mixer.experts[0].parameters())
                total -= (n - k) * per_expert
        return total
