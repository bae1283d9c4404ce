"""Batched log-likelihood and greedy generation over any Hugging Face causal LM.

Tokenisation follows lm-evaluation-harness (``HFLM``) so that scores are comparable with it:
the tokenizer's own special-token convention (BOS if it adds one), trailing context spaces moved
into the continuation, and the continuation taken from the encoding of context + continuation.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F

DEFAULT_MAX_LENGTH = 2048


class HFLM:
    """An HF model + tokenizer with the two primitives every task needs."""

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 8,
        max_length: int | None = None,
        chat_template: bool = False,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.device = next(model.parameters()).device
        self.max_length = max_length or _model_max_length(model, tokenizer)
        self.chat_template = chat_template and bool(getattr(tokenizer, "chat_template", None))
        # Padding id only fills positions that attention masks out; any valid id works.
        self.pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    @classmethod
    def load(
        cls,
        name_or_path: str,
        device: str = "cpu",
        batch_size: int = 8,
        dtype: str = "auto",
        chat_template: bool = False,
    ) -> HFLM:
        """Load a causal LM by any model name: embedded teacher, folder, .gguf file or hub id.

        dtype: `auto` = the checkpoint's own (what torchao-quantised folders need), `native` =
        bfloat16 where `device` computes it natively (CPU flags, GPU) else float32, or a dtype name.
        Log-softmax runs on fp32 logits either way; generation uses the same model.
        """
        from aetheris.errors import BadValueError
        from aetheris.teacher.load import load_teacher

        dtype = native_dtype(device) if dtype == "native" else dtype
        loaded = load_teacher(name_or_path, dtype=dtype)
        if loaded.tokenizer is None:
            raise BadValueError(f"model {name_or_path}: no tokenizer found; evaluation needs one")
        # torchao-quantised folders (aetheris compress) otherwise keep the dtype they were saved in
        model = loaded.model if dtype == "auto" else loaded.model.to(getattr(torch, dtype))
        return cls(model.to(device), loaded.tokenizer, batch_size=batch_size, chat_template=chat_template)

    # -- tokenisation ---------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's ``_encode_pair`` for causal models."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx) :]

    @property
    def prefix_id(self) -> int:
        """Token that conditions the first token of a text scored from scratch."""
        tok = self.tokenizer
        for i in (tok.bos_token_id, tok.eos_token_id, self.pad_id):
            if i is not None:
                return i
        return 0

    # -- log-likelihood -------------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of log p(continuation | context) per (context, continuation) string pair."""
        return self.loglikelihood_tokens([self.encode_pair(c, x) for c, x in requests])

    @torch.inference_mode()
    def loglikelihood_tokens(self, requests: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """Sum of log-probabilities of each continuation, batched, right-padded.

        Right padding keeps every real token at its unpadded position, so a causal model gives
        the same numbers batched or alone. Contexts are left-truncated to the model's length.
        """
        rows = []
        for ctx, cont in requests:
            if not cont:
                raise ValueError("empty continuation: nothing to score")
            if len(cont) > self.max_length:
                raise ValueError(f"continuation of {len(cont)} tokens exceeds max length {self.max_length}")
            full = (list(ctx) + list(cont))[-(self.max_length + 1) :]
            rows.append((full[:-1], list(cont)))
        out = [0.0] * len(rows)
        # Longest first: similar lengths share a batch, and an out-of-memory shows up at once.
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = max(len(rows[i][0]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for b, i in enumerate(idx):
                n = len(rows[i][0])
                ids[b, :n] = torch.tensor(rows[i][0])
                mask[b, :n] = 1
            # Only continuation positions are scored: with a large vocabulary the head over the
            # context would cost as much as the rest of the model.
            first = max(0, min(len(rows[i][0]) - len(rows[i][1]) for i in idx))
            kwargs = {"logits_to_keep": width - first} if self._keeps_logits else {}
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs).logits
            offset = width - logits.shape[1]  # positions before `offset` were not computed
            for b, i in enumerate(idx):
                inp, cont = rows[i]
                n, k = len(inp), len(cont)
                logp = F.log_softmax(logits[b, n - k - offset : n - offset].float(), dim=-1)
                target = torch.tensor(cont, device=logp.device)
                out[i] = float(logp.gather(1, target[:, None]).sum())
        return out

    def text_nll_bits(self, texts: Sequence[str]) -> list[float]:
        """Negative log-likelihood in bits of each whole text, first token conditioned on BOS.

        Texts longer than the model's window are scored in consecutive windows, each seeing
        as much preceding text as fits.
        """
        requests, owner = [], []
        for t, text in enumerate(texts):
            toks = self.encode(text, add_special_tokens=False)
            if not toks:
                requests.append(None)
                continue
            full = [self.prefix_id] + toks
            for s in range(1, len(full), self.max_length):
                requests.append((full[:s], full[s : s + self.max_length]))
                owner.append(t)
        scored = self.loglikelihood_tokens([r for r in requests if r is not None])
        bits = [0.0] * len(texts)
        for t, ll in zip(owner, scored, strict=True):
            bits[t] -= ll / float(torch.log(torch.tensor(2.0)))
        return bits

    # -- generation -----------------------------------------------------------------------------

    def format_prompt(self, prompt: str) -> str:
        """Wrap a prompt in the chat template when asked to and the tokenizer has one."""
        if not self.chat_template:
            return prompt
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    @torch.inference_mode()
    def generate(
        self, prompts: Sequence[str], stop: Sequence[str], max_new_tokens: int, rendered: bool = False
    ) -> list[str]:
        """Greedy continuation of each prompt, cut at the first stop string.

        `rendered`: the prompts are already chat-template text (e.g. tool-calling conversations),
        so they are neither wrapped again nor given special tokens.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        tok = self.tokenizer
        if not rendered:
            prompts = [self.format_prompt(p) for p in prompts]
        # A chat-formatted prompt already holds its BOS; adding one again would double it.
        special = not (rendered or self.chat_template)
        encoded = [self.encode(p, add_special_tokens=special) for p in prompts]
        keep = max(1, self.max_length - max_new_tokens)
        encoded = [e[-keep:] for e in encoded]
        out = [""] * len(prompts)
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = max(len(encoded[i]) for i in idx)
            # Left padding: every prompt ends where generation starts.
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for b, i in enumerate(idx):
                n = len(encoded[i])
                ids[b, width - n :] = torch.tensor(encoded[i])
                mask[b, width - n :] = 1
            gen = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=self.pad_id,
                stop_strings=list(stop) or None,
                tokenizer=tok if stop else None,
            )
            for b, i in enumerate(idx):
                text = tok.decode(gen[b, width:], skip_special_tokens=True)
                out[i] = cut_at_stop(text, stop)
        return out


def native_dtype(device: str) -> str:
    """bfloat16 where `device` has native bf16 compute, else float32 (the decision is logged)."""
    from aetheris.precision import resolve_bf16

    return "bfloat16" if resolve_bf16("auto", device, "eval") else "float32"


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text before the first occurrence of any stop string (lm-eval's ``until``)."""
    for s in stop:
        if s:
            text = text.split(s)[0]
    return text


def _model_max_length(model, tokenizer) -> int:
    cfg = model.config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 1_000_000:
        return value
    return DEFAULT_MAX_LENGTH
