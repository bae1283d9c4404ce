"""Fertility on real SIB-200 files, with tokenizers whose token counts are known exactly."""

import os
from pathlib import Path

import pytest
from exact_tokenizers import CharTokenizer, byte_tokenizer

from aetheris.fertility import by_script, flores_sentences, measure, script_of, tokens_per_char


def data_dir() -> Path:
    # Same resolution as aetheris: $AETHERIS_DATA_DIR, else <repo root>/../shared/data.
    env = os.environ.get("AETHERIS_DATA_DIR")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (root / "flores_sib200").is_dir():
        pytest.fail(f"benchmark data not found at {root}: set AETHERIS_DATA_DIR")
    return root


def raw_counts(code: str) -> tuple[int, int, int]:
    """(sentences, chars, UTF-8 bytes) straight from the TSV lines, independently of the loader."""
    n = chars = nbytes = 0
    for split in ("train", "dev", "test"):
        lines = (
            (data_dir() / "flores_sib200" / "annotated" / code / f"{split}.tsv")
            .read_text(encoding="utf-8")
            .splitlines()[1:]
        )
        for line in lines:
            text = line.split("\t", 2)[2]
            n, chars, nbytes = n + 1, chars + len(text), nbytes + len(text.encode("utf-8"))
    return n, chars, nbytes


def test_sentences_are_parallel_and_complete():
    sw = flores_sentences("swh_Latn", data_dir())
    am = flores_sentences("amh_Ethi", data_dir())
    assert len(sw) == len(am) == 1004
    assert script_of("amh_Ethi") == "Ethi" and script_of("zho_Hans") == "Hans"
    with pytest.raises(FileNotFoundError, match="xxx_Latn"):
        flores_sentences("xxx_Latn", data_dir())
    with pytest.raises(ValueError, match="lang_Script"):
        script_of("swahili")


def test_byte_and_char_tokenizers_give_exact_fertility():
    langs = {"sw": "swh_Latn", "am": "amh_Ethi", "zh": "zho_Hans"}
    rows = measure({"bytes": byte_tokenizer(), "chars": CharTokenizer()}, langs, data_dir())
    assert len(rows) == 6
    for r in rows:
        n, chars, nbytes = raw_counts(r.flores)
        assert (r.sentences, r.chars, r.bytes) == (n, chars, nbytes)
        if r.tokenizer == "bytes":
            # one token per byte: bytes/token = 1 exactly, tokens/char = bytes/chars
            assert r.tokens == nbytes and r.bytes_per_token == 1.0
            assert r.tokens_per_char == nbytes / chars
        else:
            # one token per character: tokens/char = 1 exactly, bytes/token = bytes/chars
            assert r.tokens == chars and r.tokens_per_char == 1.0
            assert r.bytes_per_token == nbytes / chars
    byte_fert = tokens_per_char(rows, "bytes")
    # Swahili is nearly all ASCII (~1 byte/char); Ethiopic syllables and Han characters are 3 bytes,
    # spaces and digits 1, so their ratios lie strictly between 1 and 3 and far above Swahili's.
    assert 1.0 <= byte_fert["sw"] < 1.05
    assert 2.0 < byte_fert["am"] < 3.0 and 2.0 < byte_fert["zh"] < 3.0


def test_by_script_averages_languages():
    rows = measure({"bytes": byte_tokenizer()}, ["swh_Latn", "eng_Latn", "amh_Ethi"], data_dir())
    scripts = {s.script: s for s in by_script(rows)}
    assert set(scripts) == {"Latn", "Ethi"}
    fert = tokens_per_char(rows, "bytes")
    assert scripts["Latn"].tokens_per_char == pytest.approx((fert["swh_Latn"] + fert["eng_Latn"]) / 2)
    assert scripts["Latn"].languages == ["swh_Latn", "eng_Latn"]
    assert scripts["Ethi"].bytes_per_token == 1.0
