"""vocab-trim: removed tokens fall back to smaller pieces (never <unk>), kept rows are the old rows."""

import math

import pytest
import torch
from compress_models import model, tokenizer

from aetheris.compress import apply_method
from aetheris.compress.vocab_trim import flores_test_texts
from aetheris.data.sources import embedded_corpus
from aetheris.eval.lm import HFLM

SCRIPTS = ["en", "ar", "zh-Hans", "hi", "am", "ru", "ko"]  # Latin, Arabic, Han, Devanagari, Ge'ez, ...


def _flores():
    texts = flores_test_texts(2)
    if not texts:
        pytest.skip("SIB-200 data not found (set AETHERIS_DATA_DIR)")
    return {lang: texts[lang] for lang in SCRIPTS}


def _byte_fallback_tokenizer():
    """SentencePiece-style BPE (Metaspace, byte fallback) like Gemma's, with the 256 <0xNN> tokens."""
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    texts = [e.text for e in embedded_corpus("text")]
    tok.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=700, special_tokens=["<pad>", "<unk>", "<s>", "</s>"])
    )
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    tok = Tokenizer.from_str(json.dumps(data))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")  # fmt: skip


@pytest.mark.parametrize("kind", ["llama", "aetheris"])  # untied and tied heads; qwen3 in the round trip
def test_english_only_trim_still_encodes_every_script(kind):
    old_tok = tokenizer()
    m = model(kind)
    old_emb = m.get_input_embeddings().weight.detach().clone()
    old_head = m.get_output_embeddings().weight.detach().clone()
    en = [e.text for e in embedded_corpus("text") if e.lang == "en"][0]
    with torch.no_grad():
        old_logits = m(old_tok(en, return_tensors="pt").input_ids).logits
    outcome, _ = apply_method(m, old_tok, "vocab-trim", {"calibration_langs": "en", "report_sentences": 2})
    new_tok, new = outcome.tokenizer, outcome.model
    assert len(new_tok) == new.config.vocab_size == new.get_input_embeddings().weight.shape[0] < len(old_tok)
    # every kept row is the old row of the same token
    kept = [
        old_tok.convert_tokens_to_ids(t) for t in new_tok.convert_ids_to_tokens(list(range(len(new_tok))))
    ]
    torch.testing.assert_close(new.get_input_embeddings().weight, old_emb[kept])
    torch.testing.assert_close(new.get_output_embeddings().weight, old_head[kept])
    # calibration text keeps its tokens, so the model's logits are the old ones on the kept columns
    new_ids = new_tok(en, return_tensors="pt").input_ids
    assert [kept[i] for i in new_ids[0].tolist()] == old_tok(en).input_ids
    with torch.no_grad():
        torch.testing.assert_close(new(new_ids).logits, old_logits[..., kept])
    flores = _flores()
    for lang, texts in flores.items():
        for text in texts:
            ids = new_tok.encode(text, add_special_tokens=False)
            assert max(ids) < len(new_tok) and new_tok.decode(ids) == text, lang
    report = outcome.details["flores_test"]
    assert report["en"]["changed_token_share"] < min(
        report[lang]["changed_token_share"] for lang in SCRIPTS[1:]
    )
    bits = HFLM(new, new_tok, batch_size=4).text_nll_bits([t for ts in flores.values() for t in ts])
    assert all(math.isfinite(b) and b > 0 for b in bits)


@pytest.mark.parametrize("kind", ["gemma3", "cohere2"])
def test_target_size_is_met_exactly_and_balanced(kind):
    outcome, _ = apply_method(
        model(kind), tokenizer(), "vocab-trim", {"vocab_size": 400, "report_sentences": 0}
    )
    assert len(outcome.tokenizer) == outcome.model.config.vocab_size == 400
    assert outcome.calibration["languages"] == sorted({e.lang for e in embedded_corpus("text")})


def test_byte_fallback_tokenizer_never_produces_unk():
    old_tok = _byte_fallback_tokenizer()
    m = model("gemma3")
    m.resize_token_embeddings(len(old_tok))
    m.config.vocab_size = len(old_tok)
    outcome, _ = apply_method(m, old_tok, "vocab-trim", {"calibration_langs": "en", "report_sentences": 0})
    new_tok = outcome.tokenizer
    assert len(new_tok) < len(old_tok)
    for lang, texts in _flores().items():
        for text in texts:
            old_ids = old_tok.encode(text, add_special_tokens=False)
            ids = new_tok.encode(text, add_special_tokens=False)
            assert new_tok.unk_token_id not in ids or old_tok.unk_token_id in old_ids, lang
            assert new_tok.decode(ids) == old_tok.decode(old_ids), lang
            if lang != "en":  # characters trimmed away come back as <0xNN> bytes
                assert any(t.startswith("<0x") for t in new_tok.convert_ids_to_tokens(ids)), lang
