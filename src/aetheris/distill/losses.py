"""Distillation objectives computed over chunks of positions, so that full-vocabulary logits
(262k for Gemma-3 / Tiny Aya) never exist for the whole batch at once.

The public pieces, in torchtune's manner (small objects, one job each):
- a teacher signal, one class per form the teacher comes in: `TeacherLogits` (full logits),
  `TeacherHidden` (last hidden state + head: its logits are made per chunk too) and `TeacherTopK`
  (top-k log-probabilities from the cache in `topk_cache`);
- `KDObjective`, the weights and chunking of the loss, called on the student's hidden states and
  head with one teacher signal.

Conventions:
- Inputs are per position, unshifted, as a causal LM returns them: position t predicts token t+1.
- `labels` are HF-style (the input ids, -100 where a token must not be learnt); position t counts
  iff it has a next token that counts: labels[t+1] != -100 and attention_mask[t] = attention_mask[t+1] = 1.
  The last position never counts (it has no next token), with or without labels.
- loss = kl_weight · T² · KL(teacher_T ‖ student_T) + alpha · CE(student at T = 1, labels), each a
  mean over counted positions. T² keeps the KL gradient's size independent of T (Hinton et al., 2015).
- Per-row sums of KL and CE come back too, and `row_weights` scales each row's share of the loss:
  what per-group (equity-aware) weighting needs, without full-vocabulary logits. With
  `teacher_ce=True` the teacher's own CE at the labels comes back per row as well (a metric, never
  in the loss): the student's CE minus it is the excess CE, the quantity a bits-per-byte drop measures.
- Only one chunk of logits exists at a time. In training (`fused`, the default) each chunk's
  gradients with respect to the hidden states and the head are taken in the forward, while its
  logits exist, and the backward only scales them: the head's matmuls run three times per chunk
  (logits, d/dh, d/dhead) instead of four, and an online teacher's head once instead of twice.
  `fused=False` is the plain reference: each chunk under torch.utils.checkpoint, its logits freed
  after the forward and recomputed in the backward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

LogitFn = Callable[[torch.Tensor], torch.Tensor]

# Teacher tail mass below this is float error (k covering ~all of the vocabulary), not signal.
TAIL_EPS = 1e-6


@dataclass
class KDLoss:
    loss: torch.Tensor  # kl_weight · T² · kl + alpha · ce (row-weighted when row_weights are given)
    kl: torch.Tensor  # mean KL per counted position, at temperature T (not T²-scaled)
    ce: torch.Tensor  # mean CE per counted position at T = 1 (0 when there are no labels)
    n_tokens: int  # counted positions
    row_kl: torch.Tensor  # [B] summed KL of each row's counted positions (a metric: no gradient)
    row_ce: torch.Tensor  # [B] summed CE of each row's counted positions (a metric: no gradient)
    row_tokens: torch.Tensor  # [B] counted positions per row
    row_teacher_ce: torch.Tensor | None = None  # [B] the teacher's summed CE at the labels (teacher_ce=True)


def logit_transform(logit_scale: float = 1.0, softcap: float | None = None) -> LogitFn | None:
    """The student's (or teacher's) logit post-processing: scale, then tanh soft-capping."""
    if logit_scale == 1.0 and softcap is None:
        return None

    def fn(logits: torch.Tensor) -> torch.Tensor:
        logits = logits * logit_scale
        return torch.tanh(logits / softcap) * softcap if softcap is not None else logits

    return fn


def counted_positions(
    shape: tuple[int, int], labels: torch.Tensor | None, attention_mask: torch.Tensor | None, device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flat indices (into B·L) of the positions that count, and their next-token targets."""
    batch, length = shape
    keep = torch.zeros(batch, length, dtype=torch.bool, device=device)
    keep[:, :-1] = True
    if attention_mask is not None:
        m = attention_mask.to(device=device, dtype=torch.bool)
        keep[:, :-1] &= m[:, :-1] & m[:, 1:]
    targets = None
    if labels is not None:
        nxt = torch.full_like(labels, -100)
        nxt[:, :-1] = labels[:, 1:]
        keep &= nxt != -100
        targets = nxt.reshape(-1)
    idx = keep.reshape(-1).nonzero().squeeze(1)
    return idx, None if targets is None else targets[idx]


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype `t`'s matrix products run in here: autocast's where it is on, else `t`'s own."""
    dev = t.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else t.dtype


def _logits(h: torch.Tensor, head: torch.Tensor, fn: LogitFn | None) -> torch.Tensor:
    logits = (h @ head.t()).float()
    return fn(logits) if fn is not None else logits


def _soften(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    # T = 1 skips a pass over (and a copy of) a chunk of full-vocabulary logits.
    return logits if temperature == 1 else logits / temperature


def _label_nll(t_logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor | None:
    """The teacher's CE at T = 1 of `targets` per position, from its logits (None without targets)."""
    if targets is None:
        return None
    with torch.no_grad():
        return F.cross_entropy(t_logits.float(), targets, reduction="none")


def _kl_full(s_logits: torch.Tensor, t_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL per position [n] between full distributions."""
    s_lp = F.log_softmax(_soften(s_logits, temperature), dim=-1)
    t_lp = F.log_softmax(_soften(t_logits.float(), temperature), dim=-1)
    return F.kl_div(s_lp, t_lp, log_target=True, reduction="none").sum(-1)


# ---------------------------------------------------------------- teacher signals


class TeacherSignal(Protocol):
    """One form of the teacher's next-token distribution, per position of a [B, L] batch."""

    def at(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The per-position tensors of these flat (B·L) positions."""
        ...

    def terms(self, s_logits: torch.Tensor, part: tuple[torch.Tensor, ...], temperature: float,
              targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """KL(teacher_T ‖ student_T) per position [n], for the student's logits of `part`'s
        positions, and, when `targets` are given, the teacher's own CE at T = 1 of them (no
        gradient; from the same teacher logits)."""
        ...


@dataclass(frozen=True)
class TeacherLogits:
    """The teacher's full logits [B, L, V]."""

    logits: torch.Tensor

    def at(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.logits.reshape(-1, self.logits.shape[-1])[idx],)

    def terms(self, s_logits: torch.Tensor, part: tuple[torch.Tensor, ...], temperature: float,
              targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        return _kl_full(s_logits, part[0], temperature), _label_nll(part[0], targets)


@dataclass(frozen=True)
class TeacherHidden:
    """The teacher's last hidden state [B, L, Ht] and head [V, Ht] (+ its logit post-processing):
    its logits are made chunk by chunk, like the student's."""

    hidden: torch.Tensor
    head: torch.Tensor
    logit_fn: LogitFn | None = None

    def __post_init__(self) -> None:
        if self.hidden.shape[-1] != self.head.shape[-1]:
            raise ValueError(
                f"TeacherHidden: hidden width {self.hidden.shape[-1]} != head width {self.head.shape[-1]}"
            )

    def at(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.hidden.reshape(-1, self.hidden.shape[-1])[idx],)

    def terms(self, s_logits: torch.Tensor, part: tuple[torch.Tensor, ...], temperature: float,
              targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        with torch.no_grad():
            t_logits = _logits(part[0], self.head, self.logit_fn)  # one head product serves both terms
        return _kl_full(s_logits, t_logits, temperature), _label_nll(t_logits, targets)


@dataclass(frozen=True)
class TeacherTopK:
    """Log-probabilities [B, L, k] of the teacher's distribution *already softened at the loss's
    temperature*, and their token ids (see topk_cache). KL over k + 1 buckets: the top-k ids, and
    the teacher's remaining mass against the student's mass outside those ids. `label_logprobs`
    [B, L] (optional): the teacher's log-probability at T = 1 of each position's next token, which
    the top-k alone cannot give when that token is outside the top k."""

    logprobs: torch.Tensor
    ids: torch.Tensor
    label_logprobs: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.logprobs.shape != self.ids.shape:
            raise ValueError(f"TeacherTopK: logprobs {tuple(self.logprobs.shape)} != ids {tuple(self.ids.shape)}")
        if self.label_logprobs is not None and self.label_logprobs.shape != self.ids.shape[:-1]:
            raise ValueError(f"TeacherTopK: label_logprobs {tuple(self.label_logprobs.shape)} != "
                             f"positions {tuple(self.ids.shape[:-1])}")  # fmt: skip

    def at(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        k = self.ids.shape[-1]
        part = self.logprobs.reshape(-1, k)[idx], self.ids.reshape(-1, k)[idx].long()
        return part if self.label_logprobs is None else (*part, self.label_logprobs.reshape(-1)[idx])

    def terms(self, s_logits: torch.Tensor, part: tuple[torch.Tensor, ...], temperature: float,
              targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        if targets is None:
            return self._kl(s_logits, part, temperature), None
        if len(part) < 3:
            raise ValueError("TeacherTopK: the teacher's CE at the labels needs label_logprobs "
                             "(a top-k cache built with them)")  # fmt: skip
        # The cache's next token is the input's; a counted label is the same token.
        return self._kl(s_logits, part, temperature), -part[2].float()

    @staticmethod
    def _kl(s_logits: torch.Tensor, part: tuple[torch.Tensor, ...], temperature: float) -> torch.Tensor:
        t_lp, t_ids = part[0].float(), part[1]
        s_lp = F.log_softmax(_soften(s_logits, temperature), dim=-1)
        kl = (t_lp.exp() * (t_lp - s_lp.gather(-1, t_ids))).sum(-1)
        # Student tail: logsumexp over the ids outside the top-k. finfo.min (not -inf) keeps the
        # backward finite when k covers the whole vocabulary.
        s_tail = s_lp.scatter(-1, t_ids, torch.finfo(s_lp.dtype).min).logsumexp(-1)
        t_tail = (1 - t_lp.exp().sum(-1)).clamp(min=0)
        has_tail = t_tail > TAIL_EPS
        safe_t = torch.where(has_tail, t_tail, torch.ones_like(t_tail))
        safe_s = torch.where(has_tail, s_tail, torch.zeros_like(s_tail))
        return kl + torch.where(has_tail, safe_t * (safe_t.log() - safe_s), torch.zeros_like(t_tail))


# ---------------------------------------------------------------- chunks


@dataclass
class _Chunk:
    sl: slice  # into the counted positions
    rows: torch.Tensor  # batch row of each position
    weights: torch.Tensor  # [n, 3] per-position weights of (KL, CE, teacher CE); the last is 0
    targets: torch.Tensor | None
    teacher: tuple[torch.Tensor, ...]
    teacher_ce: bool = False


def _chunk_terms(raw: torch.Tensor, c: _Chunk, teacher: TeacherSignal, temperature: float,
                 s_fn: LogitFn | None) -> torch.Tensor:  # fmt: skip
    """Per-position (KL, CE, teacher CE) [n, 3] of one chunk, from the student's raw logits `h @ head.t()`."""
    s_logits = s_fn(raw) if s_fn is not None else raw
    kl, t_ce = teacher.terms(s_logits, c.teacher, temperature, c.targets if c.teacher_ce else None)
    # CE is reported whenever there are labels (a useful metric), weighted by alpha in the loss.
    ce = F.cross_entropy(s_logits, c.targets, reduction="none") if c.targets is not None else torch.zeros_like(kl)
    return torch.stack([kl, ce, torch.zeros_like(kl) if t_ce is None else t_ce], dim=-1)


def _checkpointed_chunk(h: torch.Tensor, head: torch.Tensor, c: _Chunk, *args) -> torch.Tensor:
    return _chunk_terms(_logits(h, head, None), c, *args)


class _FusedHeadLoss(torch.autograd.Function):
    """Σ over positions of weights · (KL, CE) of `h @ head.t()`, gradients taken chunk by chunk in
    the forward.

    Returns (weighted sum, unweighted per-row [B, 3] sums); only the first is differentiable. The
    backward multiplies the stored d/dh and d/dhead by the incoming gradient, which is exact
    because the output is linear in them.
    """

    @staticmethod
    def forward(ctx, h, head, n_rows, chunks, loss_args):  # noqa: ANN001 - autograd's signature
        need_h, need_head = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.zeros_like(h) if need_h else None
        # fp32 accumulator: the head's gradient sums over every chunk.
        grad_head = torch.zeros_like(head, dtype=torch.float32) if need_head else None
        rows = h.new_zeros(n_rows, 3, dtype=torch.float32)
        loss = h.new_zeros((), dtype=torch.float32)
        # All three products in the compute dtype, made explicit: the in-place addmm_ below is not
        # autocast, and autocast would cast a frozen head (no weight cache) again in every chunk.
        cdt = compute_dtype(head)
        head_c = head.to(cdt)
        for c in chunks:
            hc = h[c.sl].to(cdt)
            with torch.enable_grad():
                raw = _logits(hc, head_c, None).requires_grad_()  # fp32: softmax, KL, CE stay fp32
                part = _chunk_terms(raw, c, *loss_args)
                weighted = (part * c.weights).sum()
                (g,) = torch.autograd.grad(weighted, raw)
            rows.index_add_(0, c.rows, part.detach())
            loss += weighted.detach()
            g = g.to(cdt)
            if need_h:
                grad_h[c.sl] = g @ head_c
            if need_head and cdt == torch.float32:
                grad_head.addmm_(g.t(), hc)  # in place: 2x faster on CPU than adding a product
            elif need_head:
                grad_head.add_(g.t() @ hc)  # bf16 product, fp32 sum over chunks
        ctx.save_for_backward(grad_h, grad_head)
        ctx.head_dtype = head.dtype
        ctx.mark_non_differentiable(rows)
        return loss, rows

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, _grad_rows):  # noqa: ANN001
        grad_h, grad_head = ctx.saved_tensors
        return (
            None if grad_h is None else grad_h * grad_out,
            None if grad_head is None else (grad_head * grad_out).to(ctx.head_dtype),
            None,
            None,
            None,
        )


# ---------------------------------------------------------------- the objective


@dataclass(frozen=True)
class KDObjective:
    """kl_weight·T²·KL(teacher ‖ student) + alpha·CE, chunked over positions.

    Only `loss` carries gradients when `fused` (the default; see the module docstring); `kl`,
    `ce` and the per-row sums are then metrics, so weight terms here, not by combining them afterwards.
    """

    temperature: float = 1.0
    alpha: float = 0.0
    kl_weight: float = 1.0
    chunk_size: int = 1024
    fused: bool = True
    teacher_ce: bool = False  # also sum the teacher's CE at the labels per row (group DRO's excess CE)

    def __call__(
        self,
        student_hidden: torch.Tensor,
        student_head: torch.Tensor,
        teacher: TeacherSignal,
        *,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        student_logit_fn: LogitFn | None = None,
        row_weights: torch.Tensor | None = None,
    ) -> KDLoss:
        """student_hidden: [B, L, H] final (normed) hidden states; student_head: [V, H] lm_head
        weight; row_weights: [B] factors on each row's terms (default 1)."""
        if self.alpha and labels is None:
            raise ValueError("KDObjective: alpha > 0 needs labels")
        if self.teacher_ce and labels is None:
            raise ValueError("KDObjective: teacher_ce needs labels")
        batch, length, hid = student_hidden.shape
        device = student_hidden.device
        idx, targets = counted_positions((batch, length), labels, attention_mask, device)
        rows = idx // length
        terms = torch.tensor([self.kl_weight * self.temperature**2, self.alpha, 0.0], dtype=torch.float32, device=device)
        pos_weights = terms.expand(len(idx), 3)
        if row_weights is not None:
            pos_weights = pos_weights * row_weights.to(device, torch.float32)[rows, None]
        chunks = []
        for start in range(0, len(idx), self.chunk_size):
            sl = slice(start, start + self.chunk_size)
            tgt = None if targets is None else targets[sl]
            chunks.append(_Chunk(sl, rows[sl], pos_weights[sl], tgt, teacher.at(idx[sl]), self.teacher_ce))
        loss_args = (teacher, self.temperature, student_logit_fn)
        h = student_hidden.reshape(-1, hid)[idx]
        wants_grad = torch.is_grad_enabled() and (student_hidden.requires_grad or student_head.requires_grad)
        if wants_grad and self.fused and len(idx):
            loss, per_row = _FusedHeadLoss.apply(h, student_head, batch, chunks, loss_args)
        else:
            loss, per_row = self._checkpointed(h, student_head, batch, chunks, loss_args, wants_grad)
            if not len(idx):  # nothing counts (all padding): a zero that still has a graph, so backward() works
                loss = loss + 0 * (student_hidden.sum() + student_head.sum())
        n = max(len(idx), 1)
        total = per_row.detach().sum(0)
        return KDLoss(loss=loss / n, kl=total[0] / n, ce=total[1] / n, n_tokens=len(idx),
                      row_kl=per_row[:, 0].detach(), row_ce=per_row[:, 1].detach(),
                      row_tokens=torch.bincount(rows, minlength=batch),
                      row_teacher_ce=per_row[:, 2].detach() if self.teacher_ce else None)  # fmt: skip

    @staticmethod
    def _checkpointed(h, head, n_rows, chunks, loss_args, wants_grad):  # noqa: ANN001, ANN205
        """The plain reference: each chunk under checkpoint (its logits recomputed in the backward)."""
        loss = h.new_zeros((), dtype=torch.float32)
        per_row = h.new_zeros(n_rows, 3, dtype=torch.float32)
        for c in chunks:
            args = (h[c.sl], head, c, *loss_args)
            if wants_grad:
                part = checkpoint(_checkpointed_chunk, *args, use_reentrant=False)
            else:
                part = _checkpointed_chunk(*args)
            loss = loss + (part * c.weights).sum()
            per_row = per_row.index_add(0, c.rows, part.detach())
        return loss, per_row
