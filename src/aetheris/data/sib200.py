"""SIB-200 sentences (FLORES-200 sentences with topic labels, from `shared/data`) as text.

The study scores FLORES bits/byte on SIB-200 `test`; `train` and `dev` are other sentences of the
same kind in the same languages, so they are what calibration and KD may read (`sib200:train`,
`sib200:dev` as data sources). Reading goes through the eval task that scores the sentences, so
both sides agree on files and languages.
"""

from __future__ import annotations

from aetheris.data.sources import Example

TRAINABLE_SPLITS = ("train", "dev")  # never `test`: the study scores it


def sib200_texts(split: str) -> dict[str, list[str]]:
    """SIB-200 sentences of one split (train, dev, test) per Tiny Aya language present on disk."""
    from aetheris import languages
    from aetheris.eval.tasks.flores import FloresBPB
    from aetheris.paths import shared_data_dir

    task, root = FloresBPB((split,)), shared_data_dir()
    out = {}
    for lang in languages.tiny_aya():
        if lang.code not in task.codes:
            continue
        try:
            out[lang.code] = [it["text"] for it in task.load(lang.code, root, None)]
        except FileNotFoundError:  # a Tiny Aya language SIB-200 lacks (Nigerian Pidgin)
            continue
    if not out:
        raise FileNotFoundError(f"no SIB-200 {split}.tsv under {root / 'flores_sib200' / 'annotated'}")
    return out


def sib200_examples(split: str) -> list[Example]:
    """One example per sentence of `split`, tagged with its language."""
    return [Example(lang=lang, text=t) for lang, texts in sib200_texts(split).items() for t in texts]
