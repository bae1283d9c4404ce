"""The language registry: completeness, code resolution, and the facts reports rely on."""

import json
from collections import Counter
from importlib import resources

import pytest

from aetheris import languages
from aetheris.languages import AmbiguousLanguageError, Language, UnknownLanguageError, get
from aetheris.paths import shared_data_dir

TINY_AYA = {
    "Europe": "ca gl nl da fi cs pt fr lt sk eu en sv pl es sl uk el nb ro sr de it ru ga hu bg hr et lv cy",
    "Asia-Pacific": "zh-Hant yue vi tl jv km th my ms ko lo id zh-Hans ja",
    "Africa": "zu am ha ig sw xh wo sn yo pcm mg",
    "South Asia": "te mr bn ta hi pa gu ur ne",
    "West Asia": "ar mt tr he fa",
}
XCOPA = "et ht id it qu sw ta th tr vi zh".split()
MGSM = "bn de en es fr ja ru sw te th zh".split()


def _raw() -> dict:
    return json.loads(resources.files("aetheris").joinpath("data/languages.json").read_text("utf-8"))


def test_no_duplicates():
    langs = languages.all_languages()
    for field in ("code", "flores"):
        counts = Counter(getattr(lang, field) for lang in langs if getattr(lang, field))
        assert [k for k, n in counts.items() if n > 1] == [], field
    # No code may mean one entry canonically and another through a different field.
    canon = {lang.code.lower(): lang for lang in langs}
    for lang in langs:
        for other in (lang.flores, lang.iso639_1, lang.iso639_3):
            if other and other.lower() in canon:
                assert canon[other.lower()].iso639_3 == lang.iso639_3, (lang.code, other)


def test_every_tiny_aya_language_present_with_its_region():
    expected = {code: region for region, codes in TINY_AYA.items() for code in codes.split()}
    assert len(expected) == 70
    got = {lang.code: lang.region for lang in languages.tiny_aya()}
    assert got == expected


def test_fields_are_well_formed():
    for lang in languages.all_languages():
        assert isinstance(lang, Language)
        assert lang.region in languages.REGIONS
        assert 0 <= lang.tier <= 5
        assert len(lang.iso639_3) == 3 and lang.iso639_3.islower(), lang
        assert lang.iso639_1 is None or len(lang.iso639_1) == 2, lang
        assert len(lang.script) == 4 and lang.script.istitle(), lang
        if lang.flores:
            assert lang.flores == f"{lang.iso639_3}_{lang.script}", lang
        # Canonical code: ISO 639-1 if it exists, else ISO 639-3 (iso3_Script / zh-Script for scripts).
        assert lang.code in {lang.iso639_1, lang.iso639_3, lang.flores, f"zh-{lang.script}"}, lang


def test_group_determines_family():
    families: dict[str, set[str]] = {}
    for lang in languages.all_languages():
        families.setdefault(lang.group, set()).add(lang.family)
    assert {g: f for g, f in families.items() if len(f) > 1} == {}


def test_codes_resolve_both_ways():
    langs = languages.all_languages()
    iso1_count = Counter(lang.iso639_1 for lang in langs)
    iso3_count = Counter(lang.iso639_3 for lang in langs)
    for lang in langs:
        assert get(lang.code) is lang
        if lang.flores:
            assert get(lang.flores) is lang
        for code, count in ((lang.iso639_1, iso1_count), (lang.iso639_3, iso3_count)):
            if code is None:
                continue
            if count[code] == 1:
                assert get(code) is lang
            else:  # shared by script variants: an alias picks one, else it is ambiguous
                try:
                    assert get(code).iso639_3 == lang.iso639_3
                except AmbiguousLanguageError as err:
                    assert lang.code in str(err)


def test_tiny_aya_codes_resolve_to_themselves_except_traditional_chinese():
    for lang in languages.tiny_aya():
        for code in (lang.code, lang.iso639_1, lang.iso639_3, lang.flores):
            if code is None:
                continue
            expected = "zh-Hans" if code in ("zh", "zho") else lang.code
            assert get(code).code == expected, code


def test_lookup_is_case_and_separator_insensitive():
    assert get("SWH_LATN").code == "sw"
    assert get("zh-hans").code == "zh-Hans"
    assert get("zh_Hant").code == "zh-Hant"
    assert get(" Yue ").code == "yue"


def test_macro_language_codes_map_to_the_flores_variety():
    expected = {
        "sw": "swh_Latn", "ar": "arb_Arab", "fa": "pes_Arab", "ne": "npi_Deva", "ms": "zsm_Latn",
        "lv": "lvs_Latn", "et": "est_Latn", "mg": "plt_Latn", "zh-Hans": "zho_Hans",
        "zh-Hant": "zho_Hant", "yue": "yue_Hant", "nb": "nob_Latn", "tl": "tgl_Latn",
    }
    assert {code: get(code).flores for code in expected} == expected
    for macro, code in {"swa": "sw", "ara": "ar", "fas": "fa", "msa": "ms", "nep": "ne", "lav": "lv",
                        "zho": "zh-Hans", "cmn": "zh-Hans", "que": "qu", "nor": "nb"}.items():
        assert get(macro).code == code
    assert get("pcm").flores is None


def test_every_sib200_directory_resolves():
    dirs = sorted(p.name for p in (shared_data_dir() / "flores_sib200" / "annotated").iterdir() if p.is_dir())
    assert len(dirs) == 205
    for flores in dirs:
        assert get(flores).flores == flores
    # Every entry except Nigerian Pidgin is one of these varieties.
    assert {lang.flores for lang in languages.all_languages()} == set(dirs) | {None}


def test_benchmark_language_codes_resolve():
    data = shared_data_dir()
    xcopa = sorted(p.name for p in (data / "xcopa" / "data").iterdir())
    mgsm = sorted(p.stem.removeprefix("mgsm_") for p in (data / "mgsm").glob("mgsm_*.tsv"))
    assert xcopa == sorted(XCOPA) and mgsm == sorted(MGSM)
    for code in xcopa + mgsm:
        assert get(code).code == code if code != "zh" else get(code).code == "zh-Hans"
    for code in ("ht", "qu"):  # XCOPA, not Tiny Aya
        assert get(code).tiny_aya is False and get(code).flores in ("hat_Latn", "quy_Latn")


def test_tiny_aya_spans_at_least_23_groups():
    groups = {lang.group for lang in languages.tiny_aya()}
    assert len(groups) >= 23, sorted(groups)
    assert len({lang.family for lang in languages.tiny_aya()}) >= 12


def test_reference_facts():
    sw = get("sw")
    assert (sw.name, sw.family, sw.group, sw.script, sw.region, sw.tier) == (
        "Swahili", "Niger-Congo", "Bantu", "Latn", "Africa", 2)
    assert get("eu").family == "Basque" and get("ja").family == "Japonic"
    assert get("ha").group == "Chadic" and get("mt").group == "Semitic"
    assert get("fi").group == get("et").group == "Finnic" and get("hu").family == "Uralic"
    assert get("te").family == get("ta").family == "Dravidian"
    assert get("pcm").family == "Creole" and get("ht").family == "Creole"
    # Joshi et al. 2020 class 5 ("the winners") among Tiny Aya's languages.
    winners = {lang.code for lang in languages.tiny_aya() if lang.tier == 5}
    assert winners == {"en", "es", "de", "fr", "ja", "ar", "zh-Hans", "zh-Hant"}


def test_sources_are_named():
    raw = _raw()
    text = json.dumps(raw["sources"])
    for source in ("Glottolog", "WALS", "ISO 639-3", "FLORES-200", "Joshi", "Tiny Aya"):
        assert source in text, source
    assert raw["schema"] == "aetheris.languages/1"


def test_unknown_code_lists_close_matches():
    with pytest.raises(UnknownLanguageError) as err:
        get("swh_Latm")
    assert isinstance(err.value, KeyError)
    assert "swh_Latm" in str(err.value) and "sw (Swahili)" in str(err.value)
    with pytest.raises(UnknownLanguageError, match="none"):
        get("qqqq-zzzz")


def test_ambiguous_code_names_the_candidates():
    with pytest.raises(AmbiguousLanguageError, match="ace_Arab, ace_Latn"):
        get("ace")
    assert get("ace_latn").script == "Latn"


def test_bad_data_file_fails_naming_the_entry():
    raw = _raw()
    row = dict(raw["languages"][0], tier=7)
    with pytest.raises(ValueError, match=r"(?s)languages\[0\] \('ace_Arab'\).*tier must be 0..5"):
        languages._parse({"languages": [row]}, "languages.json")
    with pytest.raises(ValueError, match="duplicate code"):
        languages._parse({"languages": [raw["languages"][0]] * 2}, "languages.json")
    with pytest.raises(ValueError, match="'languages' list"):
        languages._parse([], "languages.json")


def test_cli_lists_the_registry():
    from typer.testing import CliRunner

    from aetheris.cli import app

    result = CliRunner().invoke(app, ["languages", "--tiny-aya-only"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "70 languages" in result.output and "swh_Latn" in result.output
    assert "hat_Latn" not in result.output
