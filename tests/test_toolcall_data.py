"""Validation of the multilingual tool-calling benchmark data (src/aetheris/data/toolcall)."""

from __future__ import annotations

import importlib.util
import json
import re
import unicodedata
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path

import jsonschema
import pytest

import aetheris

DATA = Path(aetheris.__file__).parent / "data" / "toolcall"
BUILD_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build_toolcall_data.py"
CATEGORIES = {"simple", "multiple", "parallel", "irrelevance"}

# The script each language is written in (ISO 15924), as in the project's language registry.
SCRIPT = {
    lang: "Latn"
    for lang in (
        "ca gl nl da fi cs pt fr lt sk eu en sv pl es sl nb ro de it ga hu hr et lv cy vi tl jv ms id "
        "zu ha ig sw xh wo sn yo pcm mg mt tr"
    ).split()
}
SCRIPT.update(
    {
        "uk": "Cyrl",
        "ru": "Cyrl",
        "bg": "Cyrl",
        "sr": "Cyrl",
        "el": "Grek",
        "zh-Hant": "Hant",
        "yue": "Hant",
        "zh-Hans": "Hans",
        "ja": "Jpan",
        "ko": "Hang",
        "km": "Khmr",
        "th": "Thai",
        "my": "Mymr",
        "lo": "Laoo",
        "am": "Ethi",
        "te": "Telu",
        "mr": "Deva",
        "hi": "Deva",
        "ne": "Deva",
        "bn": "Beng",
        "ta": "Taml",
        "pa": "Guru",
        "gu": "Gujr",
        "ur": "Arab",
        "ar": "Arab",
        "fa": "Arab",
        "he": "Hebr",
    }
)
# Unicode character-name prefix -> script code.
_NAME_SCRIPT = {
    "LATIN": "Latn",
    "CYRILLIC": "Cyrl",
    "GREEK": "Grek",
    "ARABIC": "Arab",
    "HEBREW": "Hebr",
    "ETHIOPIC": "Ethi",
    "DEVANAGARI": "Deva",
    "BENGALI": "Beng",
    "GURMUKHI": "Guru",
    "GUJARATI": "Gujr",
    "TAMIL": "Taml",
    "TELUGU": "Telu",
    "THAI": "Thai",
    "LAO": "Laoo",
    "KHMER": "Khmr",
    "MYANMAR": "Mymr",
    "HANGUL": "Hang",
    "CJK": "Hani",
    "HIRAGANA": "Hira",
    "KATAKANA": "Kana",
}
# Characters written differently in Traditional and Simplified Chinese (pairs in the same order).
TRAD_ONLY = set(
    "們這個會來時說還開點氣嗎幫設鐘間幣匯為現對從發轉讓歐燈溫關廚飛機廳"
    "訊傳話給醫藥鬧號運國節車價蘋軟寫詩講訂見後麼東倫羅馬張預適"
)
SIMP_ONLY = set(
    "们这个会来时说还开点气吗帮设钟间币汇为现对从发转让欧灯温关厨飞机厅"
    "讯传话给医药闹号运国节车价苹软写诗讲订见后么东伦罗马张预适"
)
# Colloquial Cantonese words that written Mandarin does not use.
CANTONESE = set("嘅咗喺冇唔佢哋嘢乜啲嚟噉睇搵俾諗")


def _script_of(char: str) -> str | None:
    name = unicodedata.name(char, "")
    for prefix, script in _NAME_SCRIPT.items():
        if name.startswith(prefix):
            return script
    return None


def _letter_scripts(text: str) -> Counter:
    return Counter(s for c in text if c.isalpha() and (s := _script_of(c)))


@cache
def _items(split: str) -> list[dict]:
    with open(DATA / f"{split}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _all_items() -> list[dict]:
    return _items("eval") + _items("train")


def _request(item: dict) -> str:
    return item["messages"][-1]["content"]


def _build_module():
    spec = importlib.util.spec_from_file_location("build_toolcall_data", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rebuilding_gives_the_committed_files():
    built = _build_module().build(DATA)
    for name, text in built.items():
        assert (DATA / name).read_text(encoding="utf-8") == text, f"{name} is stale: run the build script"


def test_every_language_is_written():
    present = {item["lang"] for item in _items("eval")}
    missing = [lang for lang in _build_module().LANGUAGES if lang not in present]
    assert not missing, f"languages without items: {missing}"
    assert set(_build_module().LANGUAGES) == set(SCRIPT)


def test_function_catalogue_has_valid_schemas():
    functions = json.loads((DATA / "functions.json").read_text(encoding="utf-8"))
    names = [f["function"]["name"] for f in functions]
    assert len(names) >= 30 and len(set(names)) == len(names)
    for f in functions:
        assert f["type"] == "function" and f["function"]["description"]
        params = f["function"]["parameters"]
        jsonschema.Draft202012Validator.check_schema(params)
        assert set(params["required"]) <= set(params["properties"]), f["function"]["name"]


def test_item_shape_and_categories():
    for item in _all_items():
        tag = f"{item['id']}/{item['lang']}"
        assert item["category"] in CATEGORIES, tag
        assert item["messages"][-1]["role"] == "user" and _request(item).strip(), tag
        n_calls, n_tools = len(item["gold"]), len(item["tools"])
        expected = {
            "simple": n_calls == 1 and n_tools == 1,
            "multiple": n_calls == 1 and n_tools >= 2,
            "parallel": n_calls >= 2,
            "irrelevance": n_calls == 0,
        }
        assert expected[item["category"]], f"{tag}: {n_calls} calls, {n_tools} tools"


def test_gold_calls_satisfy_their_schemas():
    checker = jsonschema.FormatChecker()
    for item in _all_items():
        tools = {t["function"]["name"]: t["function"]["parameters"] for t in item["tools"]}
        for call in item["gold"]:
            tag = f"{item['id']}/{item['lang']}/{call['name']}"
            assert call["name"] in tools, f"{tag}: function not among the item's tools"
            schema = tools[call["name"]]
            for param in schema["required"]:
                values = call["arguments"].get(param)
                assert values and "" not in values, f"{tag}: required {param!r} missing or optional"
            for param, values in call["arguments"].items():
                assert param in schema["properties"], f"{tag}: unknown parameter {param!r}"
                assert isinstance(values, list) and values, f"{tag}: {param!r} needs a list of values"
                prop_schema = schema["properties"][param]
                validator = jsonschema.Draft202012Validator(prop_schema, format_checker=checker)
                for value in values:
                    if value == "" and param not in schema["required"]:
                        continue  # "" = may be omitted
                    errors = [e.message for e in validator.iter_errors(value)]
                    assert not errors, f"{tag}: {param}={value!r}: {errors}"


def test_languages_are_parallel_by_id_and_splits_disjoint():
    ids = {split: defaultdict(set) for split in ("eval", "train")}
    for split in ids:
        for item in _items(split):
            assert item["split"] == split
            ids[split][item["lang"]].add(item["id"])
    for split, by_lang in ids.items():
        reference = by_lang["en"]
        for lang, lang_ids in by_lang.items():
            assert lang_ids == reference, f"{split}/{lang}: ids differ from English"
    assert not (ids["eval"]["en"] & ids["train"]["en"])


def test_each_language_has_enough_eval_items_in_every_category():
    by_lang = defaultdict(Counter)
    for item in _items("eval"):
        by_lang[item["lang"]][item["category"]] += 1
    for lang, counts in by_lang.items():
        assert sum(counts.values()) >= 20, lang
        assert set(counts) == CATEGORIES, f"{lang}: {counts}"


@pytest.mark.parametrize("split", ["eval", "train"])
def test_requests_are_in_the_script_of_their_language(split):
    for item in _items(split):
        lang, text = item["lang"], _request(item)
        expected = SCRIPT[lang]
        counts = _letter_scripts(text)
        if expected in ("Jpan", "Hans", "Hant"):
            han_like = ("Hani", "Hira", "Kana") if expected == "Jpan" else ("Hani",)
            counts = Counter({(expected if s in han_like else s): n for s, n in counts.items()})
        assert counts, f"{item['id']}/{lang}: no letters"
        top = counts.most_common(1)[0][0]
        assert top == expected, f"{item['id']}/{lang}: mostly {top}, expected {expected}: {text!r}"
        foreign = set(counts) - {expected, "Latn"}
        assert not foreign, f"{item['id']}/{lang}: letters of {foreign}: {text!r}"
        if expected == "Jpan":
            assert {"Hira", "Kana"} & set(_letter_scripts(text)), f"{item['id']}/ja: no kana: {text!r}"


def test_chinese_variants_and_cantonese():
    texts = defaultdict(list)
    for item in _all_items():
        if item["lang"] in ("zh-Hans", "zh-Hant", "yue"):
            texts[item["lang"]].append(_request(item))
    if not texts:
        pytest.skip("no Chinese items written yet")
    for lang, requests in texts.items():
        joined = "".join(requests)
        trad, simp = TRAD_ONLY & set(joined), SIMP_ONLY & set(joined)
        if lang == "zh-Hans":
            assert simp and not trad, f"zh-Hans uses traditional characters {trad}"
        else:
            assert trad and not simp, f"{lang} uses simplified characters {simp}"
    if "zh-Hant" in texts:
        assert not CANTONESE & set("".join(texts["zh-Hant"])), "zh-Hant should be written Mandarin"
    if "yue" in texts:
        colloquial = sum(bool(CANTONESE & set(t)) for t in texts["yue"])
        assert colloquial >= len(texts["yue"]) / 2, f"only {colloquial} yue requests are colloquial"


def test_latin_script_requests_are_not_english():
    english = {item["id"]: _request(item) for item in _all_items() if item["lang"] == "en"}
    for item in _all_items():
        if item["lang"] != "en" and SCRIPT[item["lang"]] == "Latn":
            assert _request(item) != english[item["id"]], f"{item['id']}/{item['lang']} is English"
    copies = Counter(_request(i) for i in _all_items() if i["id"] in ("e19", "e20", "e21"))
    assert max(copies.values()) <= 2, f"same request text in many languages: {copies.most_common(1)}"


def test_native_slot_values():
    sources = DATA / "sources" / "requests"
    english = json.loads((sources / "en.json").read_text(encoding="utf-8"))["values"]
    quoted = {"msg_late": "e11", "reminder_dentist": "e14"}  # dictated text: copied verbatim
    for path in sorted(sources.glob("*.json")):
        source = json.loads(path.read_text(encoding="utf-8"))
        lang, values = source["lang"], source.get("values", {})
        for slot, item_id in quoted.items():
            if lang != "en":
                assert slot in values, f"{path.name}: no native text for {slot!r}"
                assert values[slot] in source["requests"][item_id], f"{path.name}: {slot!r} not in {item_id}"
        if SCRIPT[lang] != "Latn":
            for slot in english:
                forms = values.get(slot)
                forms = [forms] if isinstance(forms, str) else forms
                assert forms, f"{path.name}: non-Latin language needs its own form of {slot!r}"
                for form in forms:
                    scripts = set(_letter_scripts(form)) - {"Latn"}
                    assert scripts, f"{path.name}: {slot}={form!r} is not in the native script"


def _ascii_digits(text: str) -> str:
    """Native digits (Bengali, Devanagari, Persian, ...) written as ASCII, so numbers compare."""
    return "".join(str(unicodedata.digit(c)) if c.isdigit() else c for c in text)


def test_numbers_and_codes_in_gold_are_stated_in_the_request():
    # Arguments the user states literally: a typo in a translation would silently change the gold.
    numeric = {"amount", "value", "minutes", "bill_amount", "tip_percent", "year", "temperature"}
    verbatim = {"tracking_number", "flight_number"}
    for item in _all_items():
        text = _ascii_digits(_request(item))
        numbers = re.findall(r"\d+", text)
        for call in item["gold"]:
            for param, values in call["arguments"].items():
                tag = f"{item['id']}/{item['lang']}: {param}={values}"
                if param in numeric:
                    assert any(str(v) in numbers for v in values), tag
                if param in verbatim:
                    assert any(v in text for v in values), tag
