"""Calibration text: language-balanced by default, any language list on request, never the test split."""

import pytest
from compress_models import tokenizer

from aetheris.compress import parse_settings
from aetheris.compress.calibration import calibration_batch, calibration_examples
from aetheris.data.sib200 import sib200_texts


@pytest.mark.parametrize("source", ["embedded", "sib200-train"])
def test_calibration_is_disjoint_from_the_sib200_test_split(source):
    try:
        test = {t for texts in sib200_texts("test").values() for t in texts}
    except FileNotFoundError:
        pytest.skip("SIB-200 data not found (set AETHERIS_DATA_DIR)")
    settings = parse_settings("wanda", {"calibration_source": source})
    examples = calibration_examples(settings)
    # every Tiny Aya language by default (SIB-200 lacks one of the 70)
    expected = 70 if source == "embedded" else len(sib200_texts("train"))
    assert len({e.lang for e in examples}) == expected >= 69
    assert not {e.text for e in examples} & test


def test_language_list_and_record():
    settings = parse_settings(
        "sparsegpt",
        {"calibration_source": "sib200-train", "calibration_langs": "sw,zh-Hans", "calibration_rows": 3},
    )
    try:
        ids, record = calibration_batch(tokenizer(), settings)
    except FileNotFoundError:
        pytest.skip("SIB-200 data not found (set AETHERIS_DATA_DIR)")
    assert ids.shape == (3, settings.calibration_seq_len)
    assert record["languages"] == ["sw", "zh-Hans"] and record["count"] == 3
    assert calibration_batch(tokenizer(), settings)[1]["hash"] == record["hash"]  # deterministic
    other = parse_settings("sparsegpt", settings.model_dump() | {"calibration_seed": 1})
    assert calibration_batch(tokenizer(), other)[1]["hash"] != record["hash"]


def test_rows_start_with_the_tokenizers_bos_unless_told_not_to():
    """calibration_bos: auto gives every packed document (and row) the BOS the tokenizer adds
    itself; false reproduces the rows built before it existed."""
    tok = tokenizer()
    assert tok("a")["input_ids"][0] == tok.bos_token_id  # this tokenizer adds BOS
    rows = {}
    for mode in ("auto", "false"):
        settings = parse_settings("wanda", {"calibration_rows": 4, "calibration_seq_len": 32, "calibration_bos": mode})
        rows[mode], record = calibration_batch(tok, settings)
        assert record["bos"] == (mode == "auto")
    assert (rows["auto"][:, 0] == tok.bos_token_id).all()
    assert not (rows["false"] == tok.bos_token_id).any()
    with pytest.raises(ValueError, match="calibration_bos"):
        parse_settings("wanda", {"calibration_bos": "yes"})
