"""`reward`: a reward or judge model the user has ranks the candidates.

- `kind: classifier`: a sequence-classification model (e.g. a Skywork/ArmoRM-style reward model)
  reads the conversation with the candidate as the last assistant turn (its own chat template,
  else `User:`/`Assistant:` lines); the score is its logit `label`.
- `kind: judge`: a causal LM is asked `template` (with {prompt} and {reply}); the score is
  log p(`yes`) - log p(`no`) as its answer (every token of each word).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from aetheris.arbitrage.arbiters.base import Arbiter, ArbiterConfig
from aetheris.arbitrage.pool import Candidate, Member
from aetheris.arbitrage.prompts import Prompt
from aetheris.errors import BadValueError

JUDGE_TEMPLATE = (
    "Here is a conversation and a candidate reply.\n\n{prompt}\n\nCandidate reply:\n{reply}\n\n"
    "Is the reply helpful, correct and in the language of the conversation? Answer Yes or No.\nAnswer:"
)


class RewardConfig(ArbiterConfig):
    name: Literal["reward"] = "reward"
    model: str = Field(description="a sequence-classification folder/hub id, or any causal LM for a judge")
    kind: Literal["classifier", "judge"] = "classifier"
    label: int = Field(0, ge=0, description="classifier: the logit that is the reward")
    template: str = JUDGE_TEMPLATE
    yes: str = " Yes"
    no: str = " No"
    max_length: int = Field(2048, gt=0)
    dtype: str = "float32"

    def check_pool(self, labels: Sequence[str]) -> None:
        from aetheris.teacher.load import resolve_model

        resolve_model(self.model)
        if self.kind == "judge" and not {"{prompt}", "{reply}"} <= set(_fields(self.template)):
            raise BadValueError("template: must contain {prompt} and {reply}")


def _fields(template: str) -> list[str]:
    import string

    return ["{" + f + "}" for _, f, _, _ in string.Formatter().parse(template) if f]


def _plain(messages: Sequence[dict[str, Any]]) -> str:
    return "\n".join(f"{m['role'].capitalize()}: {m.get('content') or ''}" for m in messages)


class RewardArbiter(Arbiter):
    name = "reward"
    cfg: RewardConfig

    def prepare(self, pool: Sequence[Member]) -> None:
        from aetheris.teacher.load import DTYPES, load_teacher, model_location

        if self.cfg.kind == "judge":
            loaded = load_teacher(self.cfg.model, dtype=self.cfg.dtype)
            self.model, self.tok = loaded.model, loaded.tokenizer
        else:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            where = model_location(self.cfg.model)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                where, dtype=DTYPES.get(self.cfg.dtype, torch.float32)).eval()  # fmt: skip
            self.tok = AutoTokenizer.from_pretrained(where)
            if self.cfg.label >= self.model.config.num_labels:
                raise BadValueError(f"arbiter.label={self.cfg.label}: the model has "
                                    f"{self.model.config.num_labels} label(s)")  # fmt: skip
        if self.tok is None:
            raise BadValueError(f"arbiter.model {self.cfg.model}: no tokenizer")

    def _text(self, prompt: Prompt, reply: str) -> str:
        messages = [*prompt.messages, {"role": "assistant", "content": reply}]
        if self.cfg.kind == "judge":
            return self.cfg.template.format(prompt=_plain(prompt.messages), reply=reply)
        if getattr(self.tok, "chat_template", None):
            try:
                return self.tok.apply_chat_template(messages, tokenize=False)
            except Exception:  # a template that rejects this chat (e.g. tool turns): plain lines
                pass
        return _plain(messages)

    @torch.inference_mode()
    def _one(self, text: str) -> dict[str, Any]:
        ids = self.tok(text, return_tensors="pt", truncation=True, max_length=self.cfg.max_length)
        if self.cfg.kind == "classifier":
            return {"score": float(self.model(**ids).logits[0, self.cfg.label])}
        yes, no = self._answer_logp(ids["input_ids"], self.cfg.yes), self._answer_logp(ids["input_ids"], self.cfg.no)
        return {"score": yes - no, "logp_yes": yes, "logp_no": no}

    def _answer_logp(self, ids: torch.Tensor, word: str) -> float:
        # The whole answer word: a small tokenizer may split " Yes" and " No" with a shared first token.
        cont = torch.tensor([self.tok.encode(word, add_special_tokens=False)])
        logits = self.model(input_ids=torch.cat([ids, cont], dim=1)).logits[0, ids.shape[1] - 1 : -1]
        logp = F.log_softmax(logits.float(), dim=-1)
        return float(logp.gather(1, cont[0][:, None]).sum())

    def score(self, batch: Sequence[tuple[Prompt, Sequence[Candidate]]],
              pool: Sequence[Member]) -> list[list[dict[str, Any]]]:  # fmt: skip
        return [[self._one(self._text(p, c.text)) for c in cands] for p, cands in batch]
