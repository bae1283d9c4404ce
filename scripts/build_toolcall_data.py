"""Build the multilingual tool-calling benchmark (eval.jsonl, train.jsonl) from its compact sources.

Sources, under src/aetheris/data/toolcall/:
  functions.json           every function schema, OpenAI `tools` format
  sources/items.json       per-id template: split, category, tool names, gold calls with slots
  sources/requests/*.json  per language: the request text of every id, and the language's own
                           forms of the free-text values (slots) the gold calls refer to

Run `python scripts/build_toolcall_data.py` after editing a source; `--check` only verifies that
the committed JSONL files equal a fresh build.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "src" / "aetheris" / "data" / "toolcall"

# Tiny Aya's 70 languages, in the order the items are written out.
LANGUAGES = (
    "ca gl nl da fi cs pt fr lt sk eu en sv pl es sl uk el nb ro sr de it ru ga hu bg hr et lv cy "
    "zh-Hant yue vi tl jv km th my ms ko lo id zh-Hans ja zu am ha ig sw xh wo sn yo pcm mg te mr bn "
    "ta hi pa gu ur ne ar mt tr he fa"
).split()


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"{path}: cannot read JSON ({err})") from err


def _expand(value: object, slot_forms: dict[str, list[str]], where: str) -> list:
    """Acceptable values of one argument: a literal list, or a slot's English + native forms."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and set(value) == {"slot"}:
        forms = slot_forms.get(value["slot"])
        if not forms:
            raise SystemExit(f"{where}: unknown slot {value['slot']!r}")
        return forms
    raise SystemExit(f"{where}: expected a list of values or {{'slot': NAME}}, got {value!r}")


def _slot_forms(english: dict, native: dict, where: str) -> dict[str, list[str]]:
    forms = {}
    for slot, en_value in english.items():
        own = native.get(slot, [])
        own = [own] if isinstance(own, str) else own
        forms[slot] = list(dict.fromkeys([en_value, *own]))  # English first, no duplicates
    unknown = set(native) - set(english)
    if unknown:
        raise SystemExit(f"{where}: values for unknown slots {sorted(unknown)}")
    return forms


def build(data_dir: Path = DATA_DIR) -> dict[str, str]:
    """Return {file name: JSONL text} for every split, built from the sources."""
    functions = {f["function"]["name"]: f for f in _load(data_dir / "functions.json")}
    templates = _load(data_dir / "sources" / "items.json")
    context = templates["context"]
    english = _load(data_dir / "sources" / "requests" / "en.json")["values"]
    lines: dict[str, list[str]] = {"eval": [], "train": []}
    for lang in LANGUAGES:
        path = data_dir / "sources" / "requests" / f"{lang}.json"
        if not path.exists():
            continue  # a language not written yet; the tests list which are missing
        source = _load(path)
        if source.get("lang") != lang:
            raise SystemExit(f"{path}: 'lang' is {source.get('lang')!r}, expected {lang!r}")
        forms = _slot_forms(english, source.get("values", {}), str(path))
        requests = source["requests"]
        missing = sorted(set(templates["items"]) - set(requests))
        extra = sorted(set(requests) - set(templates["items"]))
        if missing or extra:
            raise SystemExit(f"{path}: request ids missing {missing}, unknown {extra}")
        for item_id, tpl in templates["items"].items():
            where = f"items.json[{item_id}] ({lang})"
            unknown_tools = [t for t in tpl["tools"] if t not in functions]
            if unknown_tools:
                raise SystemExit(f"{where}: tools not in functions.json: {unknown_tools}")
            gold = [
                {
                    "name": call["name"],
                    "arguments": {k: _expand(v, forms, where) for k, v in call["arguments"].items()},
                }
                for call in tpl["gold"]
            ]
            item = {
                "id": item_id,
                "lang": lang,
                "category": tpl["category"],
                "split": tpl["split"],
                "tools": [functions[t] for t in tpl["tools"]],
                "messages": [
                    {"role": "system", "content": context},
                    {"role": "user", "content": requests[item_id]},
                ],
                "gold": gold,
            }
            lines[tpl["split"]].append(json.dumps(item, ensure_ascii=False, separators=(",", ":")))
    return {f"{split}.jsonl": "".join(line + "\n" for line in rows) for split, rows in lines.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    args = parser.parse_args()
    stale = []
    for name, text in build().items():
        target = DATA_DIR / name
        if args.check:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target} ({text.count(chr(10))} items)")
    if stale:
        sys.exit(f"out of date, rerun scripts/build_toolcall_data.py: {', '.join(stale)}")


if __name__ == "__main__":
    main()
