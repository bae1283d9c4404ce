"""FLORES-200 bits-per-byte on the SIB-200 sentences.

The 1,004 SIB-200 sentences are sentence-parallel across languages (``index_id``), so a
language's bits-per-byte is comparable across languages and models with different tokenizers:
bpb = total negative log-likelihood in bits / total UTF-8 bytes.

Only the `test` split (204 sentences) is scored by default: `train` (701) and `dev` (99) are
what calibration (`aetheris compress`) and training may read, and evaluation never sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aetheris.eval.tasks.base import DatasetLanguages, Item, load_hub, missing_file, read_tsv, take

HUB_ID = "Davlan/sib200"
SPLITS = ("train", "dev", "test")
HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}  # ours -> the hub's names

# Canonical registry code -> FLORES-200 code, for the XCOPA and MGSM languages. Other
# languages come from the language registry when it is installed.
LANGS = {
    "bn": "ben_Beng", "de": "deu_Latn", "en": "eng_Latn", "es": "spa_Latn", "et": "est_Latn",
    "fr": "fra_Latn", "ht": "hat_Latn", "id": "ind_Latn", "it": "ita_Latn", "ja": "jpn_Jpan",
    "qu": "quy_Latn", "ru": "rus_Cyrl", "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu",
    "th": "tha_Thai", "tr": "tur_Latn", "vi": "vie_Latn", "zh-Hans": "zho_Hans",
}  # fmt: skip


def flores_languages() -> dict[str, str]:
    langs = dict(LANGS)
    try:
        from aetheris import languages as registry
    except ImportError:
        return langs
    for lang in registry.all_languages():
        if lang.flores:
            langs.setdefault(lang.code, lang.flores)
    return langs


class FloresBPB(DatasetLanguages):
    name = "flores_bpb"
    metric = "bits_per_byte"
    higher_is_better = False
    version = "2"  # 2: the test split only (1 scored all three)

    def __init__(self, splits: Sequence[str] = ("test",)) -> None:
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown or not splits:
            raise ValueError(f"flores_bpb splits {list(splits)}: expected some of {', '.join(SPLITS)}")
        self.codes = flores_languages()
        self.splits = tuple(splits)

    def load(self, lang: str, data_dir: Path | None, limit: int | None) -> list[Item]:
        code = self.codes[lang]
        rows: list[tuple[str, str]] = []
        if data_dir is None:
            for split in self.splits:
                rows += [(str(r["index_id"]), r["text"]) for r in load_hub(HUB_ID, code, HUB_SPLITS[split])]
        else:
            for split in self.splits:
                path = Path(data_dir) / "flores_sib200" / "annotated" / code / f"{split}.tsv"
                if not path.is_file():
                    raise missing_file(path, f"FLORES/SIB-200 {lang}", HUB_ID)
                for n, r in enumerate(read_tsv(path, header=True), 2):
                    if len(r) != 3:
                        raise ValueError(
                            f"{path}:{n}: expected index_id, category, text; got {len(r)} columns"
                        )
                    rows.append((r[0], r[2]))
        # Sorted by index_id so that --limit takes the same sentences in every language.
        rows.sort(key=lambda r: int(r[0]))
        return take([{"id": i, "text": t} for i, t in rows], limit)

    def score(self, lm, items: Sequence[Item]) -> list[Item]:
        bits = lm.text_nll_bits([it["text"] for it in items])
        out = []
        for it, b in zip(items, bits, strict=True):
            n = len(it["text"].encode("utf-8"))
            out.append({"id": it["id"], "score": b / n if n else 0.0, "bits": b, "bytes": n})
        return out
