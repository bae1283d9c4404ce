"""Language-balanced sampling: the tau formula, determinism, exact resume, and packing."""

import json

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from aetheris.data.mixture import IndexedRows, MixtureSampler, PackedBatches, TaggedRows, language_weights
from aetheris.data.sources import Example, embedded_corpus


def byte_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def corpus(counts: dict[str, int]) -> list[Example]:
    return [Example(lang=lang, text=f"{lang} {i}") for lang, n in counts.items() for i in range(n)]


def test_weights_follow_the_formula():
    counts = {"en": 1000, "sw": 100, "wo": 10}
    w = language_weights(counts, tau=0.3)
    raw = {k: v ** 0.3 for k, v in counts.items()}
    for lang in counts:
        assert w[lang] == pytest.approx(raw[lang] / sum(raw.values()))
    assert language_weights(counts, 1.0) == pytest.approx({"en": 1000 / 1110, "sw": 100 / 1110, "wo": 10 / 1110})
    assert language_weights(counts, 0.0) == pytest.approx({"en": 1 / 3, "sw": 1 / 3, "wo": 1 / 3})
    assert language_weights({"en": 5, "fr": 0}, 0.0) == {"en": 1.0}  # empty languages never drawn


@pytest.mark.parametrize("bad, match", [({"en": 3}, "tau must be >= 0"), ({"en": 0}, "no language")])
def test_weights_reject_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        language_weights(bad, tau=-0.5 if "tau" in match else 0.3)


@pytest.mark.parametrize("tau", [0.0, 0.3, 1.0])
def test_empirical_frequencies_match_the_formula(tau):
    counts = {"en": 400, "sw": 40, "wo": 4}
    sampler = MixtureSampler(corpus(counts), tau=tau, seed=7)
    draws = [next(sampler).lang for _ in range(12000)]
    expected = language_weights(counts, tau)
    for lang, p in expected.items():
        # binomial standard error at n=12000 is <= 0.0046; allow four of them
        assert draws.count(lang) / len(draws) == pytest.approx(p, abs=0.018)


def test_each_language_is_walked_without_replacement_per_epoch():
    sampler = MixtureSampler(corpus({"en": 5, "fr": 3}), tau=0.0, seed=1)
    drawn = [next(sampler) for _ in range(60)]
    fr = [e.text for e in drawn if e.lang == "fr"]
    for start in range(0, len(fr) - 2, 3):  # every block of 3 is one full epoch
        assert sorted(fr[start:start + 3]) == ["fr 0", "fr 1", "fr 2"]


def test_sampler_is_deterministic_and_seed_dependent():
    data = corpus({"en": 50, "fr": 20, "sw": 5})
    s1, s2, s3 = MixtureSampler(data, seed=3), MixtureSampler(data[::-1], seed=3), MixtureSampler(data, seed=4)
    seq1 = [next(s1).lang for _ in range(200)]
    assert seq1 == [next(s2).lang for _ in range(200)]  # language order ignores input order
    assert seq1 != [next(s3).lang for _ in range(200)]


def test_sampler_state_round_trips_through_json():
    data = corpus({"en": 30, "yo": 7})
    s = MixtureSampler(data, tau=0.5, seed=11)
    for _ in range(45):
        next(s)
    state = json.loads(json.dumps(s.state_dict()))
    expected = [next(s) for _ in range(50)]
    fresh = MixtureSampler(data, tau=0.5, seed=11)
    fresh.load_state_dict(state)
    assert [next(fresh) for _ in range(50)] == expected
    with pytest.raises(ValueError, match="seed=11"):
        MixtureSampler(data, tau=0.5, seed=12).load_state_dict(state)


@pytest.mark.parametrize("pack", [True, False])
def test_packed_batches_resume_exactly(pack):
    texts = embedded_corpus("text")[:120]
    tok = byte_tokenizer([e.text for e in texts])

    def make() -> PackedBatches:
        return PackedBatches(MixtureSampler(texts, seed=5), tok, seq_len=48, batch_size=3, pack=pack)

    run = make()
    for _ in range(4):
        next(run)
    state = json.loads(json.dumps(run.state_dict()))  # small and JSON-serialisable
    assert len(json.dumps(state)) < 4000
    assert not pack or state["offset"] > 0  # the cut falls inside a document, the hard case
    after = [next(run) for _ in range(5)]

    resumed = make()
    resumed.load_state_dict(state)
    for want, got in zip(after, [next(resumed) for _ in range(5)]):
        assert got["langs"] == want["langs"]
        for key in ("input_ids", "attention_mask", "labels"):
            assert got[key].equal(want[key])


def word_corpus(langs: list[str], docs: int = 6, words: int = 5) -> list[Example]:
    """Short documents whose every word is their language code, so any piece of a row shows its language."""
    return [Example(lang=lang, text=" ".join([lang] * (words + i % 3))) for lang in langs for i in range(docs)]


def row_languages(tok, row: torch.Tensor, langs: list[str]) -> set[str]:
    """The languages whose words a row holds (a word cut at the row's edge counts as its language's prefix)."""
    pieces, piece = [], []
    for t in row.tolist() + [tok.eos_token_id]:  # documents one by one: EOS separates them
        if t == tok.eos_token_id:
            pieces.append(tok.decode(piece))
            piece = []
        else:
            piece.append(t)
    words = [w for text in pieces for w in text.split()]
    return {next(lang for lang in langs if lang.startswith(w)) for w in words}


def test_packing_by_language_keeps_each_row_in_its_first_documents_language():
    langs = ["en", "sw", "yo", "hi", "ja", "ar"]
    data = word_corpus(langs)
    tok = byte_tokenizer([e.text for e in data])
    mixed = next(PackedBatches(MixtureSampler(data, seed=2), tok, seq_len=48, batch_size=8))
    pure = next(PackedBatches(MixtureSampler(data, seed=2), tok, seq_len=48, batch_size=8, by_language=True))
    assert max(len(row_languages(tok, r, langs)) for r in mixed["input_ids"]) >= 3  # short documents mix
    assert [row_languages(tok, r, langs) for r in pure["input_ids"]] == [{lang} for lang in pure["langs"]]
    assert len(set(pure["langs"])) > 1  # the rows' languages still follow the mixture
    # documents longer than a row: every row is still a fresh draw of the mixture
    long = next(PackedBatches(MixtureSampler(word_corpus(langs, words=40), seed=2), tok, 16, 12, by_language=True))
    assert len(set(long["langs"])) > 2

    rows = IndexedRows(data, tok, seq_len=48, n=20, seed=4, by_language=True)
    assert [row_languages(tok, rows[i]["input_ids"], langs) for i in range(20)] == [{rows.lang(i)} for i in range(20)]
    assert [rows.lang(i) for i in range(20)] == [IndexedRows(data, tok, 48, 20, seed=4).lang(i) for i in range(20)]


def test_packing_by_language_resumes_exactly():
    langs = ["en", "sw", "yo"]
    data = word_corpus(langs, docs=4, words=9)
    tok = byte_tokenizer([e.text for e in data])

    def make() -> PackedBatches:
        return PackedBatches(MixtureSampler(data, seed=5), tok, seq_len=20, batch_size=2, by_language=True)

    run = make()
    for _ in range(40):  # stop where the current document was drawn from the row's language, mid-document
        next(run)
        state = json.loads(json.dumps(run.state_dict()))
        if state["doc_in"] and state["offset"] > 0:
            break
    assert state["doc_in"] and state["offset"] > 0
    after = [next(run) for _ in range(6)]
    resumed = make()
    resumed.load_state_dict(state)
    for want, got in zip(after, [next(resumed) for _ in range(6)]):
        assert got["langs"] == want["langs"] and got["input_ids"].equal(want["input_ids"])


def test_packing_shapes_and_masks():
    texts = embedded_corpus("text")[:60]
    tok = byte_tokenizer([e.text for e in texts])
    batch = next(PackedBatches(MixtureSampler(texts, seed=0), tok, seq_len=32, batch_size=4))
    assert batch["input_ids"].shape == (4, 32) and bool(batch["attention_mask"].all())
    assert (batch["input_ids"] == tok.eos_token_id).any()  # documents are separated by EOS

    padded = next(PackedBatches(MixtureSampler(texts, seed=0), tok, seq_len=512, batch_size=4, pack=False))
    lengths = padded["attention_mask"].sum(1)
    assert bool((lengths < 512).all())  # one short paragraph per row, padded
    assert bool((padded["labels"][padded["attention_mask"] == 0] == -100).all())
    row = padded["input_ids"][0, : int(lengths[0])].tolist()
    assert row[-1] == tok.eos_token_id and tok.decode(row[:-1]) in {e.text for e in texts}


class CountingTokenizer:
    """A byte tokenizer that counts the texts it was asked to encode."""

    def __init__(self, tok) -> None:
        self.tok, self.calls, self.eos_token_id = tok, 0, tok.eos_token_id

    def __call__(self, text, **kw):
        self.calls += 1
        return self.tok(text, **kw)


def test_indexed_rows_are_full_deterministic_and_tokenise_only_what_is_read():
    texts = embedded_corpus("text")[:120]
    tok = CountingTokenizer(byte_tokenizer([e.text for e in texts]))
    rows = IndexedRows(texts, tok, seq_len=40, n=1_000_000, seed=3)  # a million rows cost nothing up front
    assert len(rows) == 1_000_000 and tok.calls == 0
    late = rows[999_999]["input_ids"]
    assert tok.calls > 0 and late.shape == (40,) and bool(rows[999_999]["attention_mask"].all())
    # random access: a row does not depend on which rows were read before it, or on the instance
    first = [rows[i]["input_ids"] for i in range(5)]
    again = IndexedRows(list(texts), tok, seq_len=40, n=1_000_000, seed=3)
    assert all(again[i]["input_ids"].equal(first[i]) for i in reversed(range(5)))
    assert again[999_999]["input_ids"].equal(late)
    other = IndexedRows(texts, tok, seq_len=40, n=5, seed=4)
    assert not all(other[i]["input_ids"].equal(first[i]) for i in range(5))
    with pytest.raises(IndexError, match="row 5 of 5"):
        other[5]


def test_indexed_rows_languages_follow_tau_and_name_each_rows_first_document():
    counts = {"en": 400, "sw": 40, "wo": 4}
    data = corpus(counts)
    tok = byte_tokenizer([e.text for e in data])
    rows = IndexedRows(data, tok, seq_len=64, n=6000, tau=0.3, seed=1)
    langs = [rows.lang(i) for i in range(len(rows))]
    for lang, p in language_weights(counts, 0.3).items():
        assert langs.count(lang) / len(langs) == pytest.approx(p, abs=0.026)  # 4 binomial SEs at n=6000
    for i in range(30):  # short documents: each row starts at its first document's first token
        assert tok.decode(rows[i]["input_ids"][:8].tolist()).startswith(langs[i] + " ")
    # several documents per row, separated by EOS
    assert int((rows[0]["input_ids"] == tok.eos_token_id).sum()) >= 2


def test_indexed_rows_read_long_documents_beyond_their_start():
    long = [Example(lang="en", text=" ".join(f"w{i}" for i in range(400)))]
    tok = byte_tokenizer([long[0].text])
    rows = IndexedRows(long, tok, seq_len=16, n=40, seed=0)
    starts = {tok.decode(rows[i]["input_ids"].tolist()).split()[0] for i in range(40)}
    assert len(starts) > 20  # a random offset per row, not always "w0"


def test_tagged_rows_add_tags_as_rows_are_read():
    rows = [{"input_ids": torch.tensor([1, 2])}, {"input_ids": torch.tensor([3, 4])}]
    tagged = TaggedRows(rows, row_id=range(2), group=[1, 0])
    assert len(tagged) == 2 and int(tagged[1]["row_id"]) == 1 and int(tagged[1]["group"]) == 0
    assert "group" not in rows[1]  # the rows themselves are untouched
    with pytest.raises(ValueError, match="tag 'group' has 3 values for 2 rows"):
        TaggedRows(rows, group=[0, 1, 2])


def test_bos_follows_the_tokenizers_habit_and_starts_every_document_and_row():
    """Gemma/Llama tokenizers put BOS first when they encode a text, and their models need it
    (gemma3-270m is 1.7-2x worse per byte without it): packed rows then start each document with
    it, and a row that starts inside a document starts with it too."""
    from eval_tiny import tiny_tokenizer

    from aetheris.data.mixture import bos_id

    texts = embedded_corpus("text")[:60]
    with_bos, without = tiny_tokenizer([e.text for e in texts], 400), byte_tokenizer([e.text for e in texts])
    b = with_bos.bos_token_id
    assert bos_id(with_bos) == b and bos_id(with_bos, "false") is None and bos_id(without) is None
    with pytest.raises(ValueError, match="no bos_token_id"):
        bos_id(without, "true")
    with pytest.raises(ValueError, match="bos must be one of"):
        bos_id(with_bos, "yes")

    rows = next(PackedBatches(MixtureSampler(texts, seed=0), with_bos, seq_len=24, batch_size=6, bos=b))["input_ids"]
    assert bool((rows[:, 0] == b).all())  # every row, also those that start inside a document
    ids = rows.flatten().tolist()
    after_eos = [ids[i + 1] for i in range(len(ids) - 1) if ids[i] == with_bos.eos_token_id and (i + 1) % 24]
    assert after_eos and all(t == b for t in after_eos)  # every document starts with BOS
    plain = next(PackedBatches(MixtureSampler(texts, seed=0), with_bos, seq_len=24, batch_size=6))["input_ids"]
    assert b not in plain.tolist()[0]  # bos=None keeps the rows as they were

    lazy = IndexedRows(texts, with_bos, seq_len=24, n=20, seed=1, bos=b)
    assert all(int(lazy[i]["input_ids"][0]) == b for i in range(20))
    by_lang = next(PackedBatches(MixtureSampler(texts, seed=0), with_bos, seq_len=24, batch_size=4,
                                 by_language=True, bos=b))["input_ids"]  # fmt: skip
    assert bool((by_lang[:, 0] == b).all())
