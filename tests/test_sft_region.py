"""sft.region / sft.languages: a region run trains on its region's chats and tool items only."""

import json

import pytest
import torch
from eval_tiny import tiny_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from aetheris import languages
from aetheris.data.sources import embedded_corpus
from aetheris.distill.config import ConfigError, parse_config
from aetheris.distill.pipeline import Run, run_stages, sft_chats

BUDGET = {"steps": 2, "batch_size": 1, "lr": 1e-3, "log_every": 1}


def config(out, teacher="unused", **sft):
    return parse_config({
        "teacher": {"name": str(teacher)},
        "student": {"layout": "SM", "experts": "upcycle", "overrides": {"ssm_chunk_size": 16}},
        "data": {"train": ["embedded"], "seq_len": 16},
        "sft": {"max_length": 1024, **sft},
        "train": {"align": BUDGET, "kd": BUDGET, "sft": BUDGET},
        "output_dir": str(out),
    })  # fmt: skip


@pytest.fixture
def chats_file(tmp_path):
    """Tiny chat data in one language of each of three regions (and one the registry calls Other)."""
    rows = [("sw", "Habari?", "Nzuri."), ("yo", "Bawo ni?", "Dada."), ("fr", "Salut ?", "Bien."),
            ("hi", "नमस्ते?", "ठीक।"), ("hi", "क्या हाल?", "अच्छा।")]  # fmt: skip
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps({"lang": lang, "messages": [
        {"role": "user", "content": q}, {"role": "assistant", "content": a}]}, ensure_ascii=False) + "\n"
        for lang, q, a in rows), encoding="utf-8")  # fmt: skip
    return path


def region_of(code: str) -> str:
    return languages.get(code).region


def test_region_keeps_its_chats_and_tool_items_only(chats_file, tmp_path):
    data = [str(chats_file), "embedded:tools"]
    everything = sft_chats(Run(config(tmp_path, data=data)))
    africa = sft_chats(Run(config(tmp_path, data=data, region="Africa")))
    assert {c.lang for c in africa} >= {"sw", "yo"}  # the file's African chats ...
    assert {region_of(c.lang) for c in africa} == {"Africa"}  # ... and no other region's
    assert any(c.tools for c in africa) and any(not c.tools for c in africa)  # tool items and chats
    # exactly the African part of the global run's data, nothing dropped, nothing added
    assert africa == [c for c in everything if region_of(c.lang) == "Africa"]
    assert {region_of(c.lang) for c in everything} >= {"Africa", "Europe", "South Asia", "West Asia", "Asia-Pacific"}


def test_language_list_selects_by_any_code_form(chats_file, tmp_path):
    cfg = config(tmp_path, data=[str(chats_file)], languages=["hin", "FR"])  # ISO 639-3 and any case
    assert cfg.sft.languages == ["hi", "fr"]
    kept = sft_chats(Run(cfg))
    assert sorted(c.lang for c in kept) == ["fr", "hi", "hi"]


def test_every_built_in_region_has_chats_and_tool_items(tmp_path):
    for region in ("Africa", "South Asia", "Europe", "Asia-Pacific", "West Asia"):
        kept = sft_chats(Run(config(tmp_path, region=region)))
        assert {region_of(c.lang) for c in kept} == {region}
        assert any(c.tools for c in kept) and any(not c.tools for c in kept), region


@pytest.mark.parametrize(
    ("sft", "expected"),
    [
        ({"region": "Afrika"}, "sft.region: unknown region 'Afrika'; expected one of Europe, Asia-Pacific, Africa"),
        ({"region": "Other"}, "sft.region: unknown region 'Other'"),
        ({"languages": ["sw", "klingon"]}, "sft.languages: unknown language code 'klingon'"),
        ({"languages": []}, "sft.languages: list should have at least 1 item"),
        ({"region": "Africa", "languages": ["sw"]}, "sft: set region or languages, not both"),
    ],
)
def test_bad_selection_is_one_line_naming_the_key(tmp_path, sft, expected):
    with pytest.raises(ConfigError) as err:
        config(tmp_path, **sft)
    problems = str(err.value).splitlines()[1:]
    assert len(problems) == 1 and problems[0].strip().startswith(expected), str(err.value)


def test_no_chat_in_the_region_is_an_error_naming_it(chats_file, tmp_path):
    with pytest.raises(ValueError, match="sft.region 'West Asia': none of the 5 chats"):
        sft_chats(Run(config(tmp_path, data=[str(chats_file)], region="West Asia")))


def test_region_sft_starts_from_a_shared_student_and_records_its_languages(chats_file, tmp_path):
    tok = tiny_tokenizer([e.text for e in embedded_corpus()][:100], vocab_size=300)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                 num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=True,
                                 bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(
        tmp_path / "teacher")  # fmt: skip
    tok.save_pretrained(tmp_path / "teacher")
    run_stages(config(tmp_path / "global", tmp_path / "teacher"), "init")  # the shared starting point
    start = tmp_path / "global" / "init"
    cfg = config(tmp_path / "africa", tmp_path / "teacher", data=[str(chats_file), "embedded:tools"],
                 region="Africa", start_from=str(start))  # fmt: skip
    final = run_stages(cfg, "sft")
    note = json.loads((tmp_path / "africa" / "sft" / "stage.json").read_text())
    assert note["region"] == "Africa" and {region_of(c) for c in note["languages"]} == {"Africa"}
    from safetensors.torch import load_file

    before, after = load_file(start / "model.safetensors"), load_file(final / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # SFT trained the shared student
    missing = config(tmp_path / "x", tmp_path / "teacher", start_from=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="sft.start_from .*nowhere: no model folder"):
        run_stages(missing, "sft")


def test_shipped_region_configs_are_the_global_run_restricted_to_a_region():
    from pathlib import Path

    from aetheris.distill.config import load_config

    configs = Path(__file__).resolve().parents[1] / "configs"
    glob = load_config(configs / "sft-global.yaml")
    assert glob.sft.selected_languages() is None and glob.sft.start_from is None
    seen = set()
    for path in sorted(configs.glob("sft-region-*.yaml")):
        cfg = load_config(path)
        seen.add(cfg.sft.region)
        assert path.stem == f"sft-region-{cfg.sft.region.lower().replace(' ', '-')}"
        assert cfg.sft.start_from == glob.output_dir / "kd"  # every region starts from the global student
        for section in ("teacher", "student", "data", "align", "kd"):
            assert getattr(cfg, section) == getattr(glob, section), (path.name, section)
        assert cfg.sft.data == glob.sft.data and cfg.output_dir != glob.output_dir
    assert seen == {"Africa", "South Asia", "Europe", "Asia-Pacific", "West Asia"}
