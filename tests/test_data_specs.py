"""The form of data specs in run configs, checked offline by `aetheris check-config` (exit 2)."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aetheris.cli import app
from aetheris.distill.config import ConfigError, load_config, parse_config

# Run configs. The others are formats of their own, each validated beside its command: merge-*
# (test_merge.py), study-* (test_study.py), arbitrage* (test_arbitrage.py), sft-tools-*
# (test_sft_model.py: the any-model SFT recipe, not a pipeline run).
OTHER_FORMATS = ("merge-", "study-", "arbitrage", "sft-tools-")
CONFIGS = sorted(p for p in (Path(__file__).parent.parent / "configs").glob("*.yaml")
                 if not p.name.startswith(OTHER_FORMATS))  # fmt: skip
FINEWEB2 = {"hub": "HuggingFaceFW/fineweb-2", "languages": ["sw", "hi"], "rows_per_language": 10}


def _config(train: list) -> dict:
    return {
        "teacher": {"name": "gemma3-270m"},
        "data": {"train": train, "seq_len": 32},
        "train": {stage: {"steps": 1, "batch_size": 1, "lr": 1e-3} for stage in ("align", "kd", "sft")},
        "output_dir": "runs/x",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_checks(path):
    result = CliRunner().invoke(app, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    cfg = load_config(path)
    assert cfg.data.train


def test_flagship_config_names_real_subsets():
    fineweb2, fineweb = load_config(Path(__file__).parent.parent / "configs" / "tiny-aya.yaml").data.train
    codes = fineweb2.dataset_codes()
    # FineWeb-2's own names where they are not FLORES-200's; English comes from FineWeb.
    assert codes["et"] == "ekk_Latn" and codes["zh-Hans"] == "cmn_Hani" and codes["sw"] == "swh_Latn"
    assert "en" not in codes and "zh-Hant" not in codes and len(codes) == 68
    assert fineweb.dataset_codes() == {"en": "eng_Latn"} and fineweb.subset == "sample-10BT"


@pytest.mark.parametrize(
    ("train", "expected"),
    [
        (["HuggingFaceFW/fineweb-2"], "data.train.0: 'HuggingFaceFW/fineweb-2' is no local folder; a hub "
                                      "dataset is written hf:HuggingFaceFW/fineweb-2"),
        (["hub:HuggingFaceFW/fineweb-2"], "data.train.0: unknown source prefix 'hub:'"),
        (["hf:"], "data.train.0: expected hf:<dataset id>[:split], got 'hf:'"),
        (["corpus.csv"], "data.train.0: unsupported file type '.csv'"),
        ([{**FINEWEB2, "languages": ["sw", "tlh-xx"]}], "data.train.0.languages: unknown language code 'tlh-xx'"),
        ([{**FINEWEB2, "codes": {"klingon": "tlh_Latn"}}], "data.train.0.codes: unknown language code 'klingon'"),
        ([{k: v for k, v in FINEWEB2.items() if k != "rows_per_language"}],
         "data.train.0.rows_per_language: required key is missing"),
        ([{**FINEWEB2, "text_column": "text"}], "data.train.0.text_column: unknown key"),
        ([{**FINEWEB2, "subset": "default"}], "data.train.0: language_field is required when subset is not "
                                              "per-language ('{code}')"),
        ([{**FINEWEB2, "subset": "{lang}"}], "data.train.0.subset: a subset may name only the placeholder {code}"),
        ([{**FINEWEB2, "languages": ["pcm"]}], "data.train.0: codes.pcm: pcm has no FLORES-200 code"),
        ([{**FINEWEB2, "hub": "fineweb 2"}], "data.train.0.hub: expected a hub dataset id 'owner/name' or a local folder"),
        ([{**FINEWEB2, "language_field": "{iso_639_3"}], "data.train.0.language_field: expected a field name"),
        ([{**FINEWEB2, "rows_per_language": 0}], "data.train.0.rows_per_language: input should be greater than 0"),
    ],
)
def test_bad_data_specs_are_named(train, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(_config(train), "run.yaml")
    lines = str(err.value).splitlines()
    assert lines[0] == "run.yaml: 1 problem(s)"
    assert len(lines) == 2 and lines[1].strip().startswith(expected), lines


def test_good_data_specs_parse(tmp_path):
    (tmp_path / "corpus").mkdir()
    train = ["embedded", "hf:owner/rows:validation", str(tmp_path / "corpus"), "a/b.jsonl",
             {**FINEWEB2, "languages": "tiny-aya", "codes": {"pcm": "pcm_Latn", "en": None}},
             {"hub": "./local/flores", "subset": None, "language_field": "{iso_639_3}_{iso_15924}",
              "languages": ["swh_Latn", "zh"], "rows_per_language": 2}]  # fmt: skip
    cfg = parse_config(_config(train))
    assert cfg.data.train[:4] == train[:4]
    assert cfg.data.train[5].selected() == ["sw", "zh-Hans"]  # FLORES and ISO codes made canonical
    assert "en" not in cfg.data.train[4].dataset_codes() and cfg.data.train[4].dataset_codes()["pcm"] == "pcm_Latn"


def test_check_config_exits_2_with_the_key(tmp_path):
    bad = _config([{**FINEWEB2, "languages": ["xx-nope"]}])
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(bad))
    result = CliRunner().invoke(app, ["check-config", str(tmp_path / "run.yaml")])
    assert result.exit_code == 2
    assert "data.train.0.languages: unknown language code 'xx-nope'" in result.output
