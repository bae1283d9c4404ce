"""Data sources: JSONL and Parquet reading, malformed rows skipped and counted by reason."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aetheris.data.sources import LoadSummary, embedded_corpus, read_jsonl, read_source, read_sources

GOOD_TEXT = {"text": "Habari ya asubuhi.", "lang": "sw"}
GOOD_CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
             "lang": "eng_Latn"}


def _write_lines(path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_jsonl_skips_and_counts_every_kind_of_bad_row(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [
        json.dumps(GOOD_TEXT).encode(),
        json.dumps(GOOD_CHAT).encode(),
        b'{"text": "no closing brace", "lang": "en"',  # invalid JSON
        b'{"text": "\xff\xfe broken", "lang": "en"}',  # undecodable bytes
        b"",  # blank line: layout, not a row
        json.dumps({"text": "sans langue"}).encode(),
        json.dumps({"text": "   ", "lang": "en"}).encode(),
        json.dumps({"text": "Klingon", "lang": "tlh-xx"}).encode(),
        json.dumps({"lang": "en"}).encode(),
        json.dumps([1, 2]).encode(),
        json.dumps({"messages": [{"role": "user", "content": "only a question"}], "lang": "en"}).encode(),
        json.dumps({"text": 42, "lang": "en"}).encode(),
    ]
    _write_lines(path, rows)
    summary = LoadSummary()
    examples = list(read_jsonl(path, summary))

    assert [(e.lang, e.text is not None) for e in examples] == [("sw", True), ("en", False)]
    assert examples[1].messages[1]["content"] == "Hello!"  # FLORES code normalised to "en"
    assert dict(summary.skipped) == {
        "invalid_json": 1, "undecodable_bytes": 1, "missing_lang": 1, "empty_text": 1,
        "unknown_language": 1, "missing_text_and_messages": 1, "not_an_object": 1, "bad_messages": 1,
        "text_not_a_string": 1,
    }
    assert summary.kept == {"sw": 1, "en": 1}
    assert summary.examples_of_skips["invalid_json"] == f"{path}:3"
    text = str(summary)
    assert "kept 2 rows in 2 languages, skipped 9" in text and "invalid_json" in text


def test_parquet_and_folder_sources(tmp_path):
    table = pa.table({"text": ["Bonjour à tous.", "", "Guten Tag."], "lang": ["fr", "fr", "de"]})
    pq.write_table(table, tmp_path / "part.parquet")
    _write_lines(tmp_path / "more.jsonl", [json.dumps(GOOD_TEXT).encode()])
    summary = LoadSummary()
    examples = read_sources([tmp_path], summary)
    assert sorted(e.lang for e in examples) == ["de", "fr", "sw"]
    assert summary.skipped == {"empty_text": 1}
    assert summary.as_dict()["kept"] == {"sw": 1, "fr": 1, "de": 1}


def test_parquet_chat_rows(tmp_path):
    pq.write_table(pa.Table.from_pylist([GOOD_CHAT]), tmp_path / "chat.parquet")
    (example,) = read_source(tmp_path / "chat.parquet")
    assert example.lang == "en" and [m["role"] for m in example.messages] == ["user", "assistant"]


def test_bad_source_specs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(read_source(tmp_path / "missing.jsonl"))
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        list(read_source(tmp_path / "data.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .jsonl or .parquet"):
        list(read_source(tmp_path / "empty"))


def test_embedded_corpus_kinds():
    texts, chats = embedded_corpus("text"), embedded_corpus("chat")
    assert all(e.text for e in texts) and all(e.messages for e in chats)
    assert len({e.lang for e in texts}) >= 70
    with pytest.raises(ValueError, match="'text' or 'chat'"):
        embedded_corpus("audio")


def test_data_summary_command_reports_weights_and_skips(tmp_path, capsys):
    from aetheris.data.cli import print_data_summary

    _write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD_TEXT).encode(), json.dumps(GOOD_TEXT).encode(),
                                         json.dumps({"text": "hi", "lang": "en"}).encode(), b"{oops"])
    summary = print_data_summary([tmp_path / "d.jsonl"], tau=1.0)
    out = capsys.readouterr()
    assert summary.kept == {"sw": 2, "en": 1}
    assert "0.6667" in out.out and "0.3333" in out.out  # tau=1: proportional to rows
    assert "skipped 1 x invalid_json" in out.err


def test_sib200_splits_are_sources_and_test_is_refused():
    from aetheris.data.sib200 import sib200_texts
    from aetheris.data.sources import check_spec

    summary = LoadSummary()
    train = list(read_source("sib200:train", summary))
    assert len({e.lang for e in train}) == 69 and len(train) == sum(map(len, sib200_texts("train").values()))
    assert summary.n_kept == len(train) and summary.kept["sw"] == 701  # `aetheris data` counts them
    dev = {e.text for e in read_source("sib200:dev")}
    scored = {t for texts in sib200_texts("test").values() for t in texts}
    assert dev and not dev & scored and not {e.text for e in train} & scored  # never a sentence the study scores
    for spec in ("sib200:test", "sib200:devtest"):
        with pytest.raises(ValueError, match="expected sib200:train or sib200:dev"):
            check_spec(spec)
    with pytest.raises(ValueError, match="never train or calibrate on it"):
        list(read_source("sib200:test"))
