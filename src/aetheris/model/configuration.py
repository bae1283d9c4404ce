"""AetherisConfig: the student's shape, one letter per block."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from .ssd import SCAN_IMPLS  # relative: the model folder imports nothing outside itself

# The layout letters: the one list (the run config's layout check reads it too).
BLOCK_KINDS = {"S": "SSM mixer (Mamba-2)", "M": "MoE feed-forward", "A": "attention (teacher-shaped)"}
NORM_TYPES = ("rmsnorm", "layernorm")
QK_NORM_SCOPES = ("head", "full")


class AetherisConfig(PretrainedConfig):
    """Hybrid Mamba-2 + sparse-MoE causal LM.

    `layout` names each block: `S` SSM mixer, `M` MoE feed-forward, `A` attention. The SSM
    mixer takes its widths from the attention it replaces (MambaInLlama): one SSM head per
    query head, x and B at the key/value width, C at the query width, d_state = head_dim.
    """

    model_type = "aetheris"
    keys_to_ignore_at_inference = ["cache"]

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 576,
        layout: str = "SM" * 12,
        num_attention_heads: int = 9,
        num_key_value_heads: int = 3,
        head_dim: int | None = None,
        d_state: int | None = None,
        conv_kernel: int = 4,
        ssm_chunk_size: int = 64,
        ssm_impl: str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        num_experts: int = 4,
        num_experts_per_tok: int = 1,
        moe_intermediate_size: int = 1536,
        hidden_act: str = "silu",
        router_aux_loss_coef: float = 0.01,
        router_z_loss_coef: float = 1e-3,
        rope_theta: float = 10000.0,
        max_position_embeddings: int = 8192,
        sliding_window: int | None = None,
        attn_sliding: list[bool] | None = None,
        attn_rope_theta: list[float | None] | None = None,
        attn_scaling: float | None = None,
        qk_norm: bool = False,
        post_norm: bool = False,
        attention_bias: bool = False,
        rms_norm_eps: float = 1e-6,
        norm_type: str = "rmsnorm",
        norm_bias: bool = False,
        pre_norm: bool = True,
        parallel_residual: bool = False,
        residual_multiplier: float = 1.0,
        attention_out_bias: bool | None = None,
        qk_norm_scope: str = "head",
        rotary_dim: int | None = None,
        rope_interleaved: bool = False,
        attn_logit_softcapping: float | None = None,
        mlp_gated: bool = True,
        mlp_bias: bool = False,
        lm_head_bias: bool = False,
        embed_scale: float = 1.0,
        logit_scale: float = 1.0,
        final_logit_softcapping: float | None = None,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = True,
        use_cache: bool = True,
        distillation: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.layout = layout
        self.num_hidden_layers = len(layout)
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim if head_dim is not None else _div(hidden_size, num_attention_heads)
        self.d_state = d_state if d_state is not None else self.head_dim
        self.conv_kernel = conv_kernel
        self.ssm_chunk_size = ssm_chunk_size
        self.ssm_impl = ssm_impl
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.num_experts = num_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.moe_intermediate_size = moe_intermediate_size
        self.hidden_act = hidden_act
        self.router_aux_loss_coef = router_aux_loss_coef
        self.router_z_loss_coef = router_z_loss_coef
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.sliding_window = sliding_window
        self.attn_sliding = attn_sliding if attn_sliding is not None else [False] * layout.count("A")
        # Per A block (Gemma 3: local layers 10k, global 1M; Cohere2 global layers: None, no RoPE).
        self.attn_scaling = attn_scaling  # q·k multiplier; None: 1/sqrt(head_dim) (Gemma: query_pre_attn_scalar)
        self.attn_rope_theta = attn_rope_theta if attn_rope_theta is not None else [rope_theta] * layout.count("A")
        self.qk_norm = qk_norm
        # Gemma's sandwich layout: an RMSNorm on each block's output before the residual add.
        self.post_norm = post_norm
        self.attention_bias = attention_bias  # on q/k/v (and on o unless attention_out_bias says otherwise)
        self.attention_out_bias = attention_bias if attention_out_bias is None else attention_out_bias
        self.rms_norm_eps = rms_norm_eps  # the eps of every block norm, whichever its type
        # Teacher conventions (defaults: Llama's). Every block and the final norm: RMSNorm or LayerNorm.
        self.norm_type = norm_type
        self.norm_bias = norm_bias
        self.pre_norm = pre_norm  # False: OLMo 2's blocks normalise only their output (post_norm)
        # Cohere/Phi/GPT-NeoX: an M block right after an S/A block reads that block's input, so the
        # pair is x + mixer(norm(x)) + mlp(norm'(x)).
        self.parallel_residual = parallel_residual
        self.residual_multiplier = residual_multiplier  # Granite: x + m * block(x)
        self.qk_norm_scope = qk_norm_scope  # "head": over head_dim; "full": over all heads (OLMo 2)
        self.rotary_dim = rotary_dim if rotary_dim is not None else self.head_dim  # Phi, GPT-NeoX: partial
        self.rope_interleaved = rope_interleaved  # Cohere pairs (0,1),(2,3)..; Llama (i, i + d/2)
        self.attn_logit_softcapping = attn_logit_softcapping  # Gemma 2: cap * tanh(scores / cap)
        self.mlp_gated = mlp_gated  # False: GELU fc1/fc2 experts (GPT-NeoX, Phi, StarCoder2)
        self.mlp_bias = mlp_bias
        self.lm_head_bias = lm_head_bias  # Phi
        self.embed_scale = embed_scale
        self.logit_scale = logit_scale
        self.final_logit_softcapping = final_logit_softcapping
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        # Where the weights came from (teacher, layer map, expert strategy): written by the distiller.
        self.distillation = distillation or {}
        self._validate()
        kwargs.pop("num_hidden_layers", None)  # derived from layout
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    @property
    def layer_types(self) -> list[str]:
        """Per block, the transformers cache layer it needs (SSM: conv + SSM state; MoE: none)."""
        kinds, a = [], 0
        for letter in self.layout:
            if letter == "S":
                kinds.append("linear_attention")
            elif letter == "M":
                kinds.append("moe")
            else:
                kinds.append("sliding_attention" if self.attn_sliding[a] else "full_attention")
                a += 1
        return kinds

    def _validate(self) -> None:
        bad = sorted(set(self.layout) - set(BLOCK_KINDS))
        if not self.layout or bad:
            raise ValueError(
                f"AetherisConfig.layout={self.layout!r}: unknown block letter(s) {bad}; allowed letters: "
                + ", ".join(f"{k} = {v}" for k, v in BLOCK_KINDS.items())
            )
        for name in (
            "vocab_size", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
            "d_state", "conv_kernel", "ssm_chunk_size", "num_experts", "moe_intermediate_size",
        ):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"AetherisConfig.{name}={value!r}: expected a positive integer")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"AetherisConfig.num_key_value_heads={self.num_key_value_heads} must divide "
                f"num_attention_heads={self.num_attention_heads} (grouped heads)"
            )
        if not 1 <= self.num_experts_per_tok <= self.num_experts:
            raise ValueError(
                f"AetherisConfig.num_experts_per_tok={self.num_experts_per_tok}: expected 1..num_experts "
                f"({self.num_experts})"
            )
        choices = {"norm_type": NORM_TYPES, "qk_norm_scope": QK_NORM_SCOPES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"AetherisConfig.{name}={getattr(self, name)!r}: expected one of {allowed}")
        if self.norm_bias and self.norm_type != "layernorm":
            raise ValueError("AetherisConfig.norm_bias=True: only norm_type='layernorm' has a bias")
        if not (isinstance(self.rotary_dim, int) and 0 < self.rotary_dim <= self.head_dim and self.rotary_dim % 2 == 0):
            raise ValueError(
                f"AetherisConfig.rotary_dim={self.rotary_dim!r}: expected an even integer in 2..head_dim ({self.head_dim})"
            )
        if self.ssm_impl not in SCAN_IMPLS:
            raise ValueError(f"AetherisConfig.ssm_impl={self.ssm_impl!r}: expected one of {SCAN_IMPLS}")
        if len(self.attn_rope_theta) != self.layout.count("A"):
            raise ValueError(
                f"AetherisConfig.attn_rope_theta has {len(self.attn_rope_theta)} entries: expected one per 'A' "
                f"block of layout {self.layout!r} ({self.layout.count('A')}), each a number or null (no RoPE)"
            )
        if len(self.attn_sliding) != self.layout.count("A"):
            raise ValueError(
                f"AetherisConfig.attn_sliding has {len(self.attn_sliding)} entries: expected one per 'A' block "
                f"({self.layout.count('A')})"
            )
        if any(self.attn_sliding) and not (isinstance(self.sliding_window, int) and self.sliding_window > 0):
            raise ValueError(
                f"AetherisConfig.sliding_window={self.sliding_window!r}: a positive integer is needed "
                "when attn_sliding marks a block as sliding"
            )


def _div(a: int, b: int) -> int:
    if not isinstance(b, int) or b < 1 or a % b:
        raise ValueError(
            f"AetherisConfig.num_attention_heads={b!r} must be a positive divisor of hidden_size={a} "
            "(or give head_dim explicitly)"
        )
    return a // b
