"""The student as a transformers model: generation, caching, save/load, checkpointing, config errors."""

import pytest
import torch
from greedy import decided, greedy_with_margins
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

from aetheris import AetherisConfig, AetherisForCausalLM


def tiny(layout="SMAMSM", **kw):
    args = dict(
        vocab_size=97,
        hidden_size=48,
        layout=layout,
        num_attention_heads=6,
        num_key_value_heads=2,
        moe_intermediate_size=32,
        ssm_chunk_size=4,
        max_position_embeddings=256,
    )
    args.update(kw)
    torch.manual_seed(0)
    return AetherisForCausalLM(AetherisConfig(**args)).eval()


@pytest.mark.parametrize(
    "layout,extra",
    [
        ("SMAMSM", {}),
        ("SASAMM", {"sliding_window": 5, "attn_sliding": [True, False], "qk_norm": True}),
        ("SM" * 3, {}),
    ],
)
def test_full_sequence_logits_equal_token_by_token_generation(layout, extra):
    model = tiny(layout, **extra)
    prompt = torch.randint(1, 97, (2, 7))  # 0 is the pad id: generate() would mask it
    out = model.generate(
        prompt,
        max_new_tokens=12,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    step_logits = torch.stack(out.logits, dim=1)  # logits that produced each new token
    full_logits = model(out.sequences).logits[:, prompt.shape[1] - 1 : -1]
    torch.testing.assert_close(step_logits, full_logits, rtol=1e-4, atol=1e-4)


def test_manual_one_token_decoding_matches_full_forward():
    model = tiny("SMAM", sliding_window=3, attn_sliding=[True])
    ids = torch.randint(0, 97, (1, 10))
    full = model(ids).logits
    cache = DynamicCache(config=model.config)
    logits = [model(ids[:, :4], cache=cache, use_cache=True).logits]
    for t in range(4, 10):
        logits.append(model(ids[:, t : t + 1], cache=cache, use_cache=True).logits)
    torch.testing.assert_close(torch.cat(logits, 1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 3])
def test_fast_decoding_step_matches_the_plain_step(batch):
    """No-grad decoding takes SSMMixer.step (in-place state, one-token MoE); with autograd on, the
    same tokens go through the general paths (ssd_step, chunked-scan bookkeeping). Same logits, same cache."""
    model = tiny("SMAMSM", post_norm=True)
    ids = torch.randint(1, 97, (batch, 9))
    runs = []
    for grad in (False, True):
        cache = DynamicCache(config=model.config)
        with torch.set_grad_enabled(grad):
            logits = [model(ids[:, :4], cache=cache, use_cache=True).logits[:, -1]]
            logits += [model(ids[:, t : t + 1], cache=cache, use_cache=True).logits[:, -1] for t in range(4, 9)]
        states = [cache.get_recurrent_state(i) for i in (0, 4)] + [cache.get_conv_state(i) for i in (0, 4)]
        runs.append([t.detach() for t in logits + states])
    for fast, plain in zip(*runs):
        torch.testing.assert_close(fast, plain)


def test_generate_takes_the_fast_decoding_step(monkeypatch):
    from aetheris.model.mixer import SSMMixer
    from aetheris.model.moe import MoE

    model = tiny("SMSM")
    calls = {"step": 0, "one_token": 0}
    for cls, name in ((SSMMixer, "step"), (MoE, "one_token")):
        original = getattr(cls, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, counted)
    model.generate(torch.randint(1, 97, (1, 5)), max_new_tokens=6, do_sample=False, pad_token_id=0)
    # the prompt is one forward; each of the 5 later tokens runs 2 SSM steps and 2 one-token MoE calls
    assert calls == {"step": 10, "one_token": 10}


def test_left_padding_does_not_change_a_sequence():
    model = tiny()
    torch.manual_seed(3)
    ids = torch.randint(1, 97, (1, 6))
    alone, margin = greedy_with_margins(model, ids, 6, pad_token_id=0)
    # The padded batch runs other matrix shapes, so tokens must agree only where greedy is decided.
    assert decided(margin), f"seed gives a near-tie ({margin:.2e}); pick another"
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    batch = torch.cat([padded, torch.randint(1, 97, (1, 9))])
    mask = torch.ones_like(batch)
    mask[0, :3] = 0
    out = model.generate(batch, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(out[0, 9:], alone)


def test_sampling_generates_and_is_seeded():
    model = tiny()
    ids = torch.randint(0, 97, (2, 4))
    torch.manual_seed(1)
    a = model.generate(ids, max_new_tokens=8, do_sample=True, top_k=20, pad_token_id=0)
    torch.manual_seed(1)
    b = model.generate(ids, max_new_tokens=8, do_sample=True, top_k=20, pad_token_id=0)
    assert a.shape == (2, 12) and torch.equal(a, b)


def test_ssm_cache_size_does_not_grow_with_context():
    model = tiny("SMSM")

    def cache_bytes(n):
        cache = DynamicCache(config=model.config)
        model(torch.randint(0, 97, (1, n)), cache=cache, use_cache=True)
        return sum(
            t.numel() * t.element_size()
            for layer in cache.layers
            for states in (getattr(layer, "conv_states", {}), getattr(layer, "recurrent_states", {}))
            for t in states.values()
            if t is not None
        )

    assert cache_bytes(8) == cache_bytes(300) > 0


def test_save_and_load_roundtrip_with_auto_classes(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert AutoConfig.from_pretrained(tmp_path).layout == "SMAMSM"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is AetherisForCausalLM
    ids = torch.randint(0, 97, (2, 11))
    # The bytes come back exactly; the logits to fp32 rounding (BLAS may vary with memory alignment).
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    torch.testing.assert_close(model(ids).logits, loaded(ids).logits)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()  # tied


def test_gradient_checkpointing_gives_the_same_gradients():
    ids = torch.randint(0, 97, (2, 13))
    grads = []
    for ckpt in (False, True):
        model = tiny().train()
        if ckpt:
            model.activation_checkpointing_enable()
        model(ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6, msg=name)


def test_loss_includes_router_losses_and_counts_active_parameters():
    model = tiny()
    ids = torch.randint(0, 97, (2, 9))
    out = model(ids, labels=ids)
    ce = model.loss_function(logits=out.logits, labels=ids, vocab_size=97)
    cfg = model.config
    torch.testing.assert_close(
        out.loss, ce + cfg.router_aux_loss_coef * out.aux_loss + cfg.router_z_loss_coef * out.z_loss
    )
    expert = sum(p.numel() for p in model.model.layers[1].mixer.experts[0].parameters())
    assert (
        model.num_parameters() - model.active_parameters() == 3 * 3 * expert
    )  # 3 MoE blocks, 3 idle experts


def test_default_config_is_24_blocks_ssm_on_odd_positions():
    cfg = AetherisConfig()
    assert cfg.num_hidden_layers == 24 and cfg.layout == "SM" * 12
    assert cfg.num_experts == 4 and cfg.num_experts_per_tok == 1 and cfg.tie_word_embeddings
    assert cfg.d_state == cfg.head_dim == 64


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"layout": "SMX"}, "layout"),
        ({"layout": ""}, "layout"),
        ({"hidden_size": 50, "num_attention_heads": 6}, "num_attention_heads"),
        ({"num_attention_heads": 6, "num_key_value_heads": 4, "hidden_size": 48}, "num_key_value_heads"),
        ({"num_experts": 0}, "num_experts"),
        ({"num_experts_per_tok": 5}, "num_experts_per_tok"),
        ({"ssm_impl": "triton"}, "ssm_impl"),
        ({"layout": "SA", "attn_sliding": [True]}, "sliding_window"),
        ({"layout": "SA", "attn_sliding": [True, False]}, "attn_sliding"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field) as err:
        AetherisConfig(**kwargs)
    if field == "layout":
        assert "allowed letters: S" in str(err.value)
