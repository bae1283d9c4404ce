"""Hub sources read per language, on local `datasets` folders laid out like FineWeb-2 and FLORES+.

Each folder is what a hub repo holds: parquet files plus a README.md whose YAML `configs:` declares
the subsets. `datasets.load_dataset(folder, subset, streaming=True)` reads it exactly as it reads
the hub repo, so the code under test is the code a user with network runs; nothing is mocked.
"""

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from aetheris.data.hub import HubSource, read_hub
from aetheris.data.mixture import MixtureSampler
from aetheris.data.sources import LoadSummary, read_sources
from aetheris.distill.config import parse_config

FINEWEB2 = {  # subset -> (language, language_script) of its rows
    "swh_Latn": ("swh", "Latn"), "hin_Deva": ("hin", "Deva"), "cmn_Hani": ("cmn", "Hani"),
    "ekk_Latn": ("ekk", "Latn"),
}  # fmt: skip


def _write_repo(root: Path, files: dict[str, list[dict]], configs: list[dict]) -> Path:
    """A dataset folder: parquet files (path -> rows) and the README.md that declares the subsets."""
    for rel, rows in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), root / rel)
    (root / "README.md").write_text("---\n" + yaml.safe_dump({"configs": configs}) + "---\n# test dataset\n")
    return root


@pytest.fixture()
def fineweb2(tmp_path) -> Path:
    """FineWeb-2's layout: data/<subset>/{train,test}/*.parquet, one subset per language."""
    files, configs = {}, []
    for subset, (lang, script) in FINEWEB2.items():
        for split, n in (("train", 5), ("test", 2)):
            rows = [{"text": f"{subset} {split} document {i}", "id": f"{subset}-{split}-{i}",
                     "language": lang, "language_script": script} for i in range(n)]  # fmt: skip
            files[f"data/{subset}/{split}/000_00000.parquet"] = rows
        configs.append({"config_name": subset, "data_files": [
            {"split": s, "path": f"data/{subset}/{s}/*.parquet"} for s in ("train", "test")]})  # fmt: skip
    files["data/swh_Latn/train/000_00000.parquet"][1]["text"] = "   "  # an empty document
    files["data/hin_Deva/train/000_00000.parquet"][2]["language"] = "mar"  # a row labelled Marathi
    return _write_repo(tmp_path / "fineweb-2", files, configs)


@pytest.fixture()
def flores_plus(tmp_path) -> Path:
    """FLORES+'s layout: {dev,devtest}/<code>.parquet, a subset per language and a `default` of all."""
    langs = [("swh", "Latn"), ("cmn", "Hans"), ("eng", "Latn"), ("qaa", "Latn")]  # qaa: ISO 639-3 private use
    files, configs = {}, []
    for split, n in (("dev", 3), ("devtest", 4)):
        for iso3, script in langs:
            files[f"{split}/{iso3}_{script}.parquet"] = [
                {"id": i, "iso_639_3": iso3, "iso_15924": script, "glottocode": "none1234",
                 "text": f"{iso3} {split} sentence {i}"} for i in range(n)]  # fmt: skip
    for iso3, script in langs:
        code = f"{iso3}_{script}"
        configs.append({"config_name": code, "data_files": [
            {"split": s, "path": f"{s}/{code}.parquet"} for s in ("dev", "devtest")]})  # fmt: skip
    configs.append({"config_name": "default", "data_files": [
        {"split": s, "path": f"{s}/*.parquet"} for s in ("dev", "devtest")]})  # fmt: skip
    return _write_repo(tmp_path / "flores_plus", files, configs)


def _source(hub: Path, **kw) -> HubSource:
    return HubSource.model_validate({"hub": str(hub), **kw})


def test_fineweb2_subsets_give_each_language_its_rows(fineweb2):
    src = _source(fineweb2, languages=["sw", "hin_Deva", "zh-Hans", "et"], rows_per_language=3,
                  codes={"zh-Hans": "cmn_Hani", "et": "ekk_Latn"})  # fmt: skip
    summary = LoadSummary()
    examples = list(read_hub(src, summary))
    by_lang = {lang: [e.text for e in examples if e.lang == lang] for lang in ("sw", "hi", "zh-Hans", "et")}
    # First rows in file order, the empty one skipped; the subset names the language.
    assert by_lang["sw"] == ["swh_Latn train document 0", "swh_Latn train document 2", "swh_Latn train document 3"]
    assert by_lang["zh-Hans"] == [f"cmn_Hani train document {i}" for i in range(3)]
    assert by_lang["et"] == [f"ekk_Latn train document {i}" for i in range(3)]
    assert len(by_lang["hi"]) == 3 and len(examples) == 12
    assert summary.skipped == {"empty_text": 1}
    test = list(read_hub(src.model_copy(update={"split": "test"})))
    assert {e.text for e in test} == {f"{s} test document {i}" for s in FINEWEB2 for i in range(2)}


def test_language_field_template_checks_each_row_against_its_subset(fineweb2):
    src = _source(fineweb2, languages=["hi"], rows_per_language=5, language_field="{language}_{language_script}")
    summary = LoadSummary()
    texts = [e.text for e in read_hub(src, summary)]
    assert texts == [f"hin_Deva train document {i}" for i in (0, 1, 3, 4)]  # row 2 says mar_Deva
    assert summary.skipped == {"language_mismatch": 1}


def test_a_short_split_is_read_whole_and_reported(fineweb2, caplog):
    src = _source(fineweb2, languages=["sw"], rows_per_language=50, split="test")
    with caplog.at_level(logging.WARNING, logger="aetheris.data.hub"):
        assert len(list(read_hub(src))) == 2
    assert "[test]: fewer rows than rows_per_language=50 for sw (2 read)" in caplog.text


def test_flores_plus_rows_name_their_language_by_iso_fields(flores_plus):
    # One subset holding every language: the row's iso_639_3 + iso_15924 is its language.
    src = _source(flores_plus, languages=["sw", "zh-Hans"], subset="default", split="devtest",
                  language_field="{iso_639_3}_{iso_15924}", codes={"zh-Hans": "cmn_Hans"},
                  rows_per_language=2)  # fmt: skip
    summary = LoadSummary()
    examples = list(read_hub(src, summary))
    assert sorted((e.lang, e.text) for e in examples) == [
        ("sw", "swh devtest sentence 0"), ("sw", "swh devtest sentence 1"),
        ("zh-Hans", "cmn devtest sentence 0"), ("zh-Hans", "cmn devtest sentence 1"),
    ]  # fmt: skip
    assert summary.skipped.get("unknown_language", 0) == 4  # qaa_Latn (read before swh_Latn) is no language


def test_flores_plus_per_language_subsets(flores_plus):
    src = _source(flores_plus, languages=["en", "zh-Hans"], split="dev", codes={"zh-Hans": "cmn_Hans"},
                  language_field="{iso_639_3}_{iso_15924}", rows_per_language=10)  # fmt: skip
    examples = list(read_hub(src))
    assert [(e.lang, e.text) for e in examples] == (
        [("en", f"eng dev sentence {i}") for i in range(3)] + [("zh-Hans", f"cmn dev sentence {i}") for i in range(3)]
    )


def test_shuffled_streams_repeat_for_a_seed(fineweb2):
    src = _source(fineweb2, languages=["sw", "et"], codes={"et": "ekk_Latn"}, rows_per_language=4,
                  shuffle_buffer=3, seed=7)  # fmt: skip
    first, again = [e.text for e in read_hub(src)], [e.text for e in read_hub(src)]
    assert first == again and len(first) == 8


def test_a_subset_the_dataset_lacks_names_the_key_to_fix(fineweb2):
    src = _source(fineweb2, languages=["fa"], rows_per_language=1)  # FLORES code pes_Arab: no such subset
    with pytest.raises(ValueError, match=r"cannot read subset 'pes_Arab'.*codes"):
        list(read_hub(src))


def test_run_config_mapping_reads_through_the_pipeline(fineweb2):
    """The distill stages read `cfg.data.train` with `Run.examples`: a mapping goes the same way."""
    from aetheris.distill.pipeline import Run

    cfg = parse_config({
        "teacher": {"name": "unused"},
        "data": {"seq_len": 16, "train": [
            {"hub": str(fineweb2), "languages": ["sw", "hi"], "rows_per_language": 2},
            "embedded"]},
        "train": {stage: {"steps": 1, "batch_size": 1, "lr": 1e-3} for stage in ("align", "kd", "sft")},
        "output_dir": "/tmp/unused",
    })  # fmt: skip
    hub_source, embedded = cfg.data.train
    assert isinstance(hub_source, HubSource) and embedded == "embedded"
    examples = Run(cfg).examples([hub_source])
    assert sorted(e.lang for e in examples) == ["hi", "hi", "sw", "sw"]
    assert [e.text for e in examples] == [e.text for e in read_sources([hub_source])]
    sampler = MixtureSampler(examples, tau=0.3, seed=0)
    assert {next(sampler).lang for _ in range(20)} == {"hi", "sw"}
