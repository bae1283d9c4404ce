"""The pool: each model renders a prompt in its own chat format, answers it, and scores replies.

A tokenizer without a chat template gets the project's fallback (the format SFT trains on), and
tool items are rendered as the tools eval renders them (`toolcall.prompting.render_prompt`), so
a reply is produced the way the model will later be asked. Likelihoods are per UTF-8 byte of the
reply: the pool's tokenizers differ, so per-token figures would not compare across models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from aetheris.arbitrage.config import Generation, PoolModel
from aetheris.arbitrage.prompts import Prompt
from aetheris.data.chat import ensure_chat_template
from aetheris.eval.lm import HFLM, cut_at_stop
from aetheris.toolcall.format import ToolItem
from aetheris.toolcall.prompting import render_prompt, supports_tools


@dataclass
class Candidate:
    model: str  # the pool label
    text: str


class Member:
    """One pool model, loaded."""

    def __init__(self, label: str, lm: HFLM, languages: Sequence[str] | None = None) -> None:
        self.label, self.lm = label, lm
        self.languages = set(languages) if languages else None
        ensure_chat_template(lm.tokenizer)
        self._native_tools = supports_tools(lm.tokenizer)

    @classmethod
    def load(cls, spec: PoolModel, batch_size: int = 8) -> Member:
        return cls(spec.label, HFLM.load(spec.model, dtype=spec.dtype, batch_size=batch_size), spec.languages)

    def serves(self, lang: str) -> bool:
        return self.languages is None or lang in self.languages

    def render(self, prompt: Prompt) -> str:
        """The prompt as this model's chat text, ending where its answer starts."""
        tok = self.lm.tokenizer
        if prompt.item is not None:
            return render_prompt(tok, prompt.item, native=self._native_tools)
        if prompt.tools and not self._native_tools:
            # A chat with tools but no gold: the same fallback instructions the tool items get.
            item = ToolItem(id=prompt.id, lang=prompt.lang, category="irrelevance", tools=list(prompt.tools),
                            messages=list(prompt.messages), gold=[])  # fmt: skip
            return render_prompt(tok, item, native=False)
        return tok.apply_chat_template(list(prompt.messages), tools=list(prompt.tools) if prompt.tools else None,
                                       add_generation_prompt=True, tokenize=False)  # fmt: skip

    def _wants_bos(self, text: str) -> bool:
        # The fallback template writes no BOS, but a base model such as Gemma needs its <bos>.
        bos = getattr(self.lm.tokenizer, "bos_token", None)
        return bool(bos) and not text.startswith(bos)

    def generate(self, prompts: Sequence[Prompt], gen: Generation) -> list[list[str]]:
        """`gen.samples` replies per prompt (greedy through the eval harness's batched generate)."""
        texts = [self.render(p) for p in prompts]
        if gen.temperature == 0:
            rendered = not (texts and self._wants_bos(texts[0]))
            replies = self.lm.generate(texts, stop=gen.stop, max_new_tokens=gen.max_new_tokens, rendered=rendered)
            return [[r] for r in replies]
        return [self._sample(t, gen, i) for i, t in enumerate(texts)]

    @torch.inference_mode()
    def _sample(self, text: str, gen: Generation, index: int) -> list[str]:
        tok, lm = self.lm.tokenizer, self.lm
        ids = lm.encode(text, add_special_tokens=self._wants_bos(text))
        ids = torch.tensor([ids[-max(1, lm.max_length - gen.max_new_tokens):]])
        torch.manual_seed(gen.seed + index)
        out = lm.model.generate(input_ids=ids.to(lm.device), attention_mask=torch.ones_like(ids).to(lm.device),
                                do_sample=True, temperature=gen.temperature, top_p=gen.top_p,
                                num_return_sequences=gen.samples, max_new_tokens=gen.max_new_tokens,
                                pad_token_id=lm.pad_id)  # fmt: skip
        return [cut_at_stop(tok.decode(row[ids.shape[1]:], skip_special_tokens=True), gen.stop) for row in out]

    def loglik_per_byte(self, pairs: Sequence[tuple[Prompt, str]]) -> list[float]:
        """Mean log-likelihood per UTF-8 byte of each reply given its prompt (nats/byte; -inf if empty)."""
        requests, where = [], []
        for i, (prompt, reply) in enumerate(pairs):
            cont = self.lm.encode(reply, add_special_tokens=False) if reply else []
            if cont:
                text = self.render(prompt)
                ctx = self.lm.encode(text, add_special_tokens=self._wants_bos(text))
                requests.append((ctx, cont))
                where.append(i)
        scores = [-math.inf] * len(pairs)
        for i, ll in zip(where, self.lm.loglikelihood_tokens(requests), strict=True):
            scores[i] = ll / len(pairs[i][1].encode("utf-8"))
        return scores
