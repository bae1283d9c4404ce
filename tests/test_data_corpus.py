"""The bundled sample corpus: every Tiny Aya language, in its registry script, no shared paragraphs."""

from collections import Counter, defaultdict

import pytest
import regex

from aetheris.data.sources import LoadSummary, embedded_corpus
from aetheris.languages import get, tiny_aya

# Registry script (ISO 15924) -> Unicode script names a letter of that writing system may carry.
UNICODE_SCRIPTS = {
    "Latn": ["Latin"], "Cyrl": ["Cyrillic"], "Grek": ["Greek"], "Arab": ["Arabic"], "Hebr": ["Hebrew"],
    "Deva": ["Devanagari"], "Beng": ["Bengali"], "Gujr": ["Gujarati"], "Guru": ["Gurmukhi"],
    "Taml": ["Tamil"], "Telu": ["Telugu"], "Ethi": ["Ethiopic"], "Khmr": ["Khmer"], "Laoo": ["Lao"],
    "Mymr": ["Myanmar"], "Thai": ["Thai"], "Hang": ["Hangul"],
    "Jpan": ["Han", "Hiragana", "Katakana"], "Hans": ["Han"], "Hant": ["Han"],
}
# Characters that differ between the two Chinese scripts (simplified, traditional).
HAN_PAIRS = ["这這", "们們", "说說", "时時", "会會", "来來", "个個", "国國", "为為", "学學", "气氣", "后後",
             "里裡", "开開", "么麼", "饭飯", "买買", "电電", "还還", "边邊", "车車", "间間", "过過", "对對"]

TEXT = embedded_corpus("text")
CHAT = embedded_corpus("chat")


def _letters(text: str) -> list[str]:
    return regex.findall(r"\p{L}", text)


def _in_script(ch: str, script: str) -> bool:
    return any(regex.match(rf"\p{{scx={name}}}", ch) for name in UNICODE_SCRIPTS[script])


def _texts_of(lang: str) -> list[str]:
    out = [ex.text for ex in TEXT if ex.lang == lang]
    # tool results are machine data (JSON), not prose in the language
    out += [m["content"] for ex in CHAT if ex.lang == lang for m in ex.messages if m["content"] and m["role"] != "tool"]
    return out


def test_corpus_loads_without_skips():
    summary = LoadSummary()
    embedded_corpus("text", summary)
    embedded_corpus("chat", summary)
    assert summary.n_skipped == 0, str(summary)


@pytest.mark.parametrize("lang", [lang.code for lang in tiny_aya()])
def test_every_tiny_aya_language_has_text_and_chats(lang):
    texts = [ex for ex in TEXT if ex.lang == lang]
    chats = [ex for ex in CHAT if ex.lang == lang]
    assert len(texts) >= 6, f"{lang}: {len(texts)} paragraphs, want >= 6"
    assert len(chats) >= 2, f"{lang}: {len(chats)} chats, want >= 2"
    for chat in chats:
        roles = [m["role"] for m in chat.messages]
        assert roles[0] == "user" and "assistant" in roles


@pytest.mark.parametrize("lang", [lang.code for lang in tiny_aya()])
def test_script_matches_registry(lang):
    script = get(lang).script
    texts = _texts_of(lang)
    assert texts, f"{lang}: no text"
    for text in texts:
        letters = _letters(text)
        wrong = [ch for ch in letters if not _in_script(ch, script)]
        # A stray foreign name or unit may appear, but the text must be written in its own script.
        assert len(wrong) <= 0.02 * len(letters), f"{lang} ({script}): foreign letters {wrong[:10]} in {text[:60]!r}"


@pytest.mark.parametrize("lang, own", [("zh-Hans", 0), ("yue", 1), ("zh-Hant", 1)])
def test_chinese_scripts_are_not_mixed(lang, own):
    text = "".join(_texts_of(lang))
    foreign = [pair[1 - own] for pair in HAN_PAIRS if pair[1 - own] in text]
    assert not foreign, f"{lang} uses {'traditional' if own == 0 else 'simplified'} forms: {foreign}"
    assert any(pair[own] in text for pair in HAN_PAIRS)


def test_script_check_can_fail():
    assert not _in_script("д", "Latn") and _in_script("д", "Cyrl") and _in_script("の", "Jpan")
    assert not _in_script("の", "Hans")


def test_some_chats_call_tools():
    with_tools = [ex for ex in CHAT if ex.tools]
    assert len({ex.lang for ex in with_tools}) >= 15
    for ex in with_tools:
        calls = [c for m in ex.messages for c in m.get("tool_calls", [])]
        names = {t["function"]["name"] for t in ex.tools}
        assert calls and all(c["function"]["name"] in names for c in calls)
        assert any(m["role"] == "tool" for m in ex.messages) and ex.messages[-1]["role"] == "assistant"


def test_no_paragraph_is_shared_between_languages():
    owners = defaultdict(set)
    for ex in TEXT:
        owners[ex.text.strip()].add(ex.lang)
    shared = {text[:40]: langs for text, langs in owners.items() if len(langs) > 1}
    assert not shared
    # and no language repeats a paragraph of its own
    counts = Counter((ex.lang, ex.text) for ex in TEXT)
    assert max(counts.values()) == 1


def test_corpus_is_small():
    size = sum(len(ex.text.encode()) for ex in TEXT)
    size += sum(len(m["content"].encode()) for ex in CHAT for m in ex.messages)
    assert size < 1_500_000
