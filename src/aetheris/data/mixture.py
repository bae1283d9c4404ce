"""Language-balanced, deterministic and resumable sampling, and packing into fixed-length sequences.

A language is drawn with p(lang) ∝ n_lang ** tau (tau=1: proportional to data, tau=0: uniform; the
default 0.3 lifts small languages without repeating them endlessly). Each draw is a pure function of
(seed, step) and each language is walked through one shuffled epoch after another, so the whole
position fits in a small dict: `state_dict()` after any batch, `load_state_dict()` in a fresh
process, and the same batches follow.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from aetheris.data.sources import Example


def language_weights(counts: Mapping[str, int], tau: float = 0.3) -> dict[str, float]:
    """p(lang) ∝ n_lang ** tau over languages with at least one example."""
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    present = {lang: n for lang, n in counts.items() if n > 0}
    if not present:
        raise ValueError("no language has any example")
    raw = {lang: float(n) ** tau for lang, n in present.items()}
    total = sum(raw.values())
    return {lang: w / total for lang, w in raw.items()}


def _pick(cdf: np.ndarray, u: float) -> int:
    """The index whose slice of the cumulative distribution `cdf` holds u (float-safe at the top)."""
    return min(int(np.searchsorted(cdf, u, side="right")), len(cdf) - 1)


BOS_MODES = ("auto", "true", "false")


def bos_id(tokenizer: Any, mode: str = "auto") -> int | None:
    """The BOS id every packed document (and every row) starts with, or None.

    `auto`: the tokenizer's own habit, i.e. BOS when encoding a text adds it (Gemma, Llama), none
    when it does not (Qwen, GPT-2). Without its BOS, gemma3-270m scores SIB-200 text 1.7-2x worse
    in bits/byte (BENCHMARKS §14): a teacher distilled on such rows is not the teacher."""
    if mode not in BOS_MODES:
        raise ValueError(f"bos must be one of {BOS_MODES}, got {mode!r}")
    bos = tokenizer.bos_token_id
    if mode == "false" or bos is None:
        if mode == "true":
            raise ValueError("bos: true, but the tokenizer has no bos_token_id")
        return None
    if mode == "true":
        return bos
    return bos if list(tokenizer("a")["input_ids"][:1]) == [bos] else None


def _doc_ids(tokenizer: Any, text: str, bos: int | None = None) -> list[int]:
    """A document's token ids, after `bos` when given and followed by EOS where the tokenizer has
    one (packing separates on it)."""
    ids = ([] if bos is None else [bos]) + list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return ids


class MixtureSampler:
    """Endless iterator of examples, languages drawn by `language_weights`, resumable via state dicts."""

    def __init__(self, examples: Sequence[Example], tau: float = 0.3, seed: int = 0) -> None:
        by_lang: dict[str, list[Example]] = defaultdict(list)
        for example in examples:
            by_lang[example.lang].append(example)
        self.langs = sorted(by_lang)  # sorted: the order must not depend on how examples arrived
        self.pools = [by_lang[lang] for lang in self.langs]
        weights = language_weights({lang: len(by_lang[lang]) for lang in self.langs}, tau)
        self.probs = np.array([weights[lang] for lang in self.langs])
        self.cdf = np.cumsum(self.probs)
        self.tau, self.seed = tau, seed
        self.step = 0
        self.taken = [0] * len(self.langs)  # examples drawn so far from each language
        self._orders: dict[int, tuple[int, np.ndarray]] = {}  # cache: lang -> (epoch, its shuffle)

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.langs, self.probs.tolist()))

    def __iter__(self) -> MixtureSampler:
        return self

    def __next__(self) -> Example:
        # A fresh generator per step keyed on (seed, step): no hidden RNG state to save.
        i = _pick(self.cdf, np.random.default_rng([self.seed, self.step]).random())
        self.step += 1
        return self._take(i)

    def next_in(self, lang: str) -> Example:
        """The next example of `lang`'s pool, without a mixture draw (language-pure packing)."""
        return self._take(self.langs.index(lang))

    def _take(self, i: int) -> Example:
        pool, k = self.pools[i], self.taken[i]
        epoch, pos = divmod(k, len(pool))
        cached = self._orders.get(i)
        if cached is None or cached[0] != epoch:
            cached = (epoch, np.random.default_rng([self.seed, 1 + i, epoch]).permutation(len(pool)))
            self._orders[i] = cached
        order = cached[1]
        self.taken[i] += 1
        return pool[int(order[pos])]

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "tau": self.tau, "step": self.step,
                "taken": dict(zip(self.langs, self.taken))}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["seed"] != self.seed or state["tau"] != self.tau:
            raise ValueError(f"sampler state is for seed={state['seed']}, tau={state['tau']}; this sampler "
                             f"has seed={self.seed}, tau={self.tau}")
        if set(state["taken"]) != set(self.langs):
            raise ValueError("sampler state names other languages than this corpus: "
                             f"{sorted(set(state['taken']) ^ set(self.langs))}")
        self.step = int(state["step"])
        self.taken = [int(state["taken"][lang]) for lang in self.langs]


class PackedBatches:
    """Batches of `batch_size` x `seq_len` token ids from a sampler's texts, resumable.

    pack=True: documents, each followed by EOS, are concatenated and cut into full rows (no padding,
    attention_mask all ones). pack=False: one document per row, truncated or right-padded, padding
    masked. `labels` equal input_ids with -100 on padding. The state is the sampler's state before the
    current document plus the token offset into it, so resuming re-tokenises one document at most.

    bos: each document starts with it, and so does a row that starts inside a document (`bos_id`).

    by_language=True (with pack): a row's first document is drawn by the mixture and the rest of the
    row from that language's pool, so every token of a row is in the row's language; the tail of the
    document that ends a row is dropped (carried over, it would set the next row's language too). Mixed rows of
    short documents hold a dozen languages (the embedded corpus: 12.6 per 512-token row, 5% of the
    tokens in the first document's language), so a per-row language tag says little about them.
    """

    def __init__(self, sampler: MixtureSampler, tokenizer: Any, seq_len: int, batch_size: int,
                 pack: bool = True, by_language: bool = False, bos: int | None = None) -> None:  # fmt: skip
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len and batch_size must be >= 1, got {seq_len}, {batch_size}")
        self.sampler, self.tokenizer, self.bos = sampler, tokenizer, bos
        self.seq_len, self.batch_size, self.pack, self.by_language = seq_len, batch_size, pack, by_language
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None and not pack:
            raise ValueError("tokenizer has neither pad_token_id nor eos_token_id; padding needs one")
        self._doc: list[int] = []
        self._doc_lang = ""
        self._doc_state = sampler.state_dict()  # sampler state before the current document was drawn
        self._doc_in: str | None = None  # the language the current document was drawn from, if not by the mixture
        self._offset = 0

    def _draw(self, lang: str | None = None) -> None:
        self._doc_state, self._doc_in = self.sampler.state_dict(), lang
        example = next(self.sampler) if lang is None else self.sampler.next_in(lang)
        if example.text is None:
            raise ValueError(f"PackedBatches needs text examples; got a chat in {example.lang!r} "
                             "(use aetheris.data.chat for conversations)")
        self._doc, self._doc_lang, self._offset = _doc_ids(self.tokenizer, example.text, self.bos), example.lang, 0

    def _packed_row(self) -> tuple[list[int], str]:
        row: list[int] = []
        lang = ""
        if self.by_language:  # each row's language is the mixture's draw: the tail that did not fit is dropped
            self._offset = len(self._doc)
        if self.bos is not None and 0 < self._offset < len(self._doc):
            row.append(self.bos)  # the row starts inside a document: the model still sees its BOS first
        while len(row) < self.seq_len:
            if self._offset >= len(self._doc):
                self._draw(lang if self.by_language and lang else None)
            lang = lang or self._doc_lang  # a row is tagged with the language it starts in
            take = self._doc[self._offset:self._offset + self.seq_len - len(row)]
            row += take
            self._offset += len(take)
        return row, lang

    def _padded_row(self) -> tuple[list[int], str]:
        self._draw()
        row = self._doc[:self.seq_len]
        self._offset = len(self._doc)
        return row, self._doc_lang

    def __iter__(self) -> PackedBatches:
        return self

    def __next__(self) -> dict[str, Any]:
        rows, langs = [], []
        for _ in range(self.batch_size):
            row, lang = self._packed_row() if self.pack else self._padded_row()
            rows.append(row)
            langs.append(lang)
        ids = torch.full((self.batch_size, self.seq_len), self.pad_id if self.pad_id is not None else 0)
        mask = torch.zeros((self.batch_size, self.seq_len), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, :len(row)] = torch.tensor(row)
            mask[r, :len(row)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "langs": langs}

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self._doc_state, "offset": self._offset, "has_doc": bool(self._doc), "doc_in": self._doc_in}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        if state["has_doc"]:
            self._draw(state.get("doc_in"))  # re-draws and re-tokenises the current document
            self._offset = int(state["offset"])
        else:
            self._doc, self._offset = [], 0
            self._doc_state = self.sampler.state_dict()


class IndexedRows(Sequence[dict[str, torch.Tensor]]):
    """`n` rows of `seq_len` token ids, each built when it is asked for, from a generator keyed on
    (seed, index): random access in O(1) memory and no tokenising up front.

    `PackedBatches` walks one stream, so row i exists only after rows 0..i-1 were tokenised; at
    Tiny Aya's KD budget (1.28M rows of 2,048 tokens) holding them is 42 GB of int64 and an hour of
    tokenising before the first step. Here row i draws its documents itself: languages by
    `language_weights` (tau), documents uniformly within a language (with replacement), each
    followed by EOS (and after `bos`, as in PackedBatches) and concatenated until the row is full;
    the first document starts at a random token offset so long documents are not only ever read
    from their beginning. Every row is full
    (attention_mask all ones). A row's language is that of its first document (`lang(i)`, cheap:
    no tokenising); with `by_language` the rest of the row is drawn from that language too.
    """

    def __init__(self, examples: Sequence[Example], tokenizer: Any, seq_len: int, n: int,
                 tau: float = 0.3, seed: int = 0, by_language: bool = False, bos: int | None = None) -> None:  # fmt: skip
        if seq_len < 1 or n < 0:
            raise ValueError(f"seq_len must be >= 1 and n >= 0, got {seq_len}, {n}")
        sampler = MixtureSampler(examples, tau=tau, seed=seed)  # the same per-language pools and weights
        if any(e.text is None for pool in sampler.pools for e in pool):
            raise ValueError("IndexedRows needs text examples, not chats")
        self.langs, self.pools, self.cdf = sampler.langs, sampler.pools, sampler.cdf
        self.tokenizer, self.seq_len, self.n, self.seed = tokenizer, seq_len, n, seed
        self.by_language, self.bos = by_language, bos

    def __len__(self) -> int:
        return self.n

    def _draw(self, rng: np.random.Generator, pool: Sequence[Example] | None = None) -> Example:
        pool = self.pools[_pick(self.cdf, rng.random())] if pool is None else pool
        return pool[int(rng.integers(len(pool)))]

    def lang(self, index: int) -> str:
        return self._draw(np.random.default_rng([self.seed, index])).lang

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.n:
            raise IndexError(f"row {index} of {self.n}")
        rng = np.random.default_rng([self.seed, index])
        row: list[int] = []
        pool = None  # the first document's language pool, under by_language
        while len(row) < self.seq_len:
            example = self._draw(rng, pool)
            if self.by_language:
                pool = self.pools[self.langs.index(example.lang)]
            doc = _doc_ids(self.tokenizer, example.text, self.bos)
            start = int(rng.integers(max(len(doc) - self.seq_len, 0) + 1)) if not row else 0
            if start and self.bos is not None:
                row.append(self.bos)  # a row that starts inside a document still starts with BOS
            row += doc[start:start + self.seq_len - len(row)]
        ids = torch.tensor(row)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class TaggedRows(Sequence[dict[str, Any]]):
    """`rows` with per-row integers added as tensors when a row is read (e.g. `row_id`, `group`),
    so tags need not be written into every row up front, and rows built on demand can carry them."""

    def __init__(self, rows: Sequence[dict[str, Any]], **tags: Sequence[int]) -> None:
        for name, values in tags.items():
            if len(values) != len(rows):
                raise ValueError(f"tag {name!r} has {len(values)} values for {len(rows)} rows")
        self.rows, self.tags = rows, tags

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.rows[index], **{k: torch.tensor(v[index]) for k, v in self.tags.items()}}


class GroupedOrder:
    """Global sample offset -> row index, with the group of each draw chosen by probabilities
    that may change between optimizer steps (group DRO's `kd.reweight: sampling`).

    Offset o draws group g with the current `probs` (u from a generator keyed on (seed, o)), then
    the next row of g's pool, each pool walked in shuffled epochs like `MixtureSampler`'s
    languages. Draws are made in offset order whichever offsets a process asks for, so every
    process agrees on every row; the caller moves the draws up to a step's end (`draw_until`)
    before changing `probs`. The position is `state_dict()`: the next offset and the rows taken
    per group.
    """

    def __init__(self, groups: Sequence[int], n_groups: int, seed: int = 0) -> None:
        labels = np.asarray(groups)
        self.pools = [np.flatnonzero(labels == g) for g in range(n_groups)]
        self.seed, self.next, self.taken = seed, 0, [0] * n_groups
        self._drawn: dict[int, int] = {}
        self._orders: dict[int, tuple[int, np.ndarray]] = {}
        self.set_probs(np.full(n_groups, 1.0 / n_groups))

    def set_probs(self, probs: Sequence[float]) -> None:
        """Group probabilities from now on; groups without rows are left out (the rest renormalised)."""
        p = np.asarray(probs, dtype=float) * np.array([len(pool) > 0 for pool in self.pools])
        if not p.sum() > 0:
            raise ValueError("GroupedOrder: no group with rows has a positive probability")
        self.cdf = np.cumsum(p / p.sum())

    def _draw_next(self) -> None:
        """Draw the row of offset `self.next` into `_drawn` and move past it."""
        g = _pick(self.cdf, np.random.default_rng([self.seed, self.next]).random())
        while not len(self.pools[g]):  # float rounding at the top of the cdf can land on an empty pool
            g -= 1
        pool = self.pools[g]
        epoch, pos = divmod(self.taken[g], len(pool))
        cached = self._orders.get(g)
        if cached is None or cached[0] != epoch:
            cached = (epoch, np.random.default_rng([self.seed, 1 + g, epoch]).permutation(len(pool)))
            self._orders[g] = cached
        self.taken[g] += 1
        self._drawn[self.next] = int(pool[cached[1][pos]])
        self.next += 1

    def draw_until(self, offset: int) -> None:
        """Make every draw before `offset`; those nobody asked for are dropped."""
        while self.next < offset:
            self._draw_next()
        self._drawn = {o: i for o, i in self._drawn.items() if o >= offset}

    def __call__(self, offset: int) -> int:
        if offset < self.next and offset not in self._drawn:
            raise ValueError(f"GroupedOrder: offset {offset} was drawn already (next is {self.next})")
        while self.next <= offset:
            self._draw_next()
        return self._drawn.pop(offset)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "next": self.next, "taken": list(self.taken)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["seed"] != self.seed or len(state["taken"]) != len(self.pools):
            raise ValueError(f"GroupedOrder state is for seed {state['seed']} and {len(state['taken'])} groups; "
                             f"this order has seed {self.seed} and {len(self.pools)}")
        self.next, self.taken, self._drawn = int(state["next"]), [int(t) for t in state["taken"]], {}
