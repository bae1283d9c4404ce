"""Distillation losses computed over chunks of positions, so that full-vocabulary logits
(262k for Gemma-3 / Tiny Aya) never exist for the whole batch at once.

Conventions (all functions):
- Inputs are per position, unshifted, as a causal LM returns them: position t predicts token t+1.
- `labels` are HF-style (the input ids, -100 where a token must not be learnt); position t counts
  iff it has a next token that counts: labels[t+1] != -100 and attention_mask[t] = attention_mask[t+1] = 1.
  The last position never counts (it has no next token), with or without labels.
- loss = T² · KL(teacher_T ‖ student_T) + alpha · CE(student at T = 1, labels), each a mean over
  counted positions. T² keeps the KL gradient's size independent of T (Hinton et al., 2015).
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

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

LogitFn = Callable[[torch.Tensor], torch.Tensor]

# Teacher tail mass below this is float error (k covering ~all of the vocabulary), not signal.
TAIL_EPS = 1e-6


@dataclass
class KDLoss:
    loss: torch.Tensor  # T² · kl + alpha · ce
    kl: torch.Tensor  # mean KL per counted position, at temperature T (not T²-scaled)
    ce: torch.Tensor  # mean CE per counted position at T = 1 (0 when there are no labels)
    n_tokens: int  # counted positions


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


def _student_logits(h: torch.Tensor, head: torch.Tensor, fn: LogitFn | None) -> torch.Tensor:
    logits = (h @ head.t()).float()
    return fn(logits) if fn is not None else logits


def _soften(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    # T = 1 skips a pass over (and a copy of) a chunk of full-vocabulary logits.
    return logits if temperature == 1 else logits / temperature


def _kl_full(s_logits: torch.Tensor, t_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    s_lp = F.log_softmax(_soften(s_logits, temperature), dim=-1)
    t_lp = F.log_softmax(_soften(t_logits.float(), temperature), dim=-1)
    return F.kl_div(s_lp, t_lp, log_target=True, reduction="sum")


def _kl_topk(
    s_logits: torch.Tensor, t_lp: torch.Tensor, t_ids: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL over k+1 buckets: the teacher's top-k ids, and everything else as one tail bucket."""
    s_lp = F.log_softmax(_soften(s_logits, temperature), dim=-1)
    t_lp = t_lp.float()
    s_lp_k = s_lp.gather(-1, t_ids)
    kl = (t_lp.exp() * (t_lp - s_lp_k)).sum()
    # Student tail: logsumexp over the ids outside the top-k. finfo.min (not -inf) keeps the
    # backward finite when k covers the whole vocabulary.
    s_tail = s_lp.scatter(-1, t_ids, torch.finfo(s_lp.dtype).min).logsumexp(-1)
    t_tail = (1 - t_lp.exp().sum(-1)).clamp(min=0)
    has_tail = t_tail > TAIL_EPS
    safe_t = torch.where(has_tail, t_tail, torch.ones_like(t_tail))
    safe_s = torch.where(has_tail, s_tail, torch.zeros_like(s_tail))
    return kl + torch.where(has_tail, safe_t * (safe_t.log() - safe_s), torch.zeros_like(t_tail)).sum()


def _chunk(h: torch.Tensor, head: torch.Tensor, *loss_args) -> torch.Tensor:
    """Summed (KL, CE) of one chunk of positions, as a 2-vector (the checkpointed reference)."""
    return _chunk_from_logits(_student_logits(h, head, None), *loss_args)


def _chunk_from_logits(
    raw: torch.Tensor,
    targets: torch.Tensor | None,
    teacher: tuple[torch.Tensor, ...],
    mode: str,
    temperature: float,
    s_fn: LogitFn | None,
    t_fn: LogitFn | None,
) -> torch.Tensor:
    """Summed (KL, CE) of one chunk, from the student's raw logits `h @ head.t()`."""
    s_logits = s_fn(raw) if s_fn is not None else raw
    if mode == "logits":
        kl = _kl_full(s_logits, teacher[0], temperature)
    elif mode == "hidden":
        with torch.no_grad():
            t_logits = _student_logits(teacher[0], teacher[1], t_fn)
        kl = _kl_full(s_logits, t_logits, temperature)
    else:
        kl = _kl_topk(s_logits, teacher[0], teacher[1], temperature)
    # CE is reported whenever there are labels (a useful metric), weighted by alpha in the loss.
    ce = F.cross_entropy(s_logits, targets, reduction="sum") if targets is not None else kl * 0
    return torch.stack([kl, ce])


class _FusedHeadLoss(torch.autograd.Function):
    """sum_chunks w · (KL, CE) of `h @ head.t()`, its gradients taken chunk by chunk in the forward.

    Returns (weighted sum, unweighted [KL, CE] sums); only the first is differentiable. The
    backward multiplies the stored d/dh and d/dhead by the incoming gradient, which is exact
    because the output is linear in them.
    """

    @staticmethod
    def forward(ctx, h, head, weights, chunks, loss_args):  # noqa: ANN001 - autograd's signature
        need_h, need_head = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.zeros_like(h) if need_h else None
        # fp32 accumulator: the head's gradient sums over every chunk.
        grad_head = torch.zeros_like(head, dtype=torch.float32) if need_head else None
        totals = h.new_zeros(2, dtype=torch.float32)
        for sl, targets, teacher in chunks:
            hc = h[sl]
            with torch.enable_grad():
                raw = _student_logits(hc, head, None).requires_grad_()
                part = _chunk_from_logits(raw, targets, teacher, *loss_args)
                (g,) = torch.autograd.grad((part * weights).sum(), raw)
            totals += part.detach()
            g = g.to(head.dtype)
            if need_h:
                grad_h[sl] = g @ head
            if need_head and head.dtype == torch.float32:
                grad_head.addmm_(g.t(), hc)  # in place: 2x faster on CPU than adding a product
            elif need_head:
                grad_head.add_(g.t() @ hc)
        ctx.save_for_backward(grad_h, grad_head)
        ctx.head_dtype = head.dtype
        ctx.mark_non_differentiable(totals)
        return (totals * weights).sum(), totals

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, _grad_totals):  # noqa: ANN001
        grad_h, grad_head = ctx.saved_tensors
        return (
            None if grad_h is None else grad_h * grad_out,
            None if grad_head is None else (grad_head * grad_out).to(ctx.head_dtype),
            None,
            None,
            None,
        )

def kd_loss(
    student_hidden: torch.Tensor,
    student_head: torch.Tensor,
    *,
    teacher_logits: torch.Tensor | None = None,
    teacher_hidden: torch.Tensor | None = None,
    teacher_head: torch.Tensor | None = None,
    teacher_topk_logprobs: torch.Tensor | None = None,
    teacher_topk_ids: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    alpha: float = 0.0,
    chunk_size: int = 1024,
    student_logit_fn: LogitFn | None = None,
    teacher_logit_fn: LogitFn | None = None,
    kl_weight: float = 1.0,
    fused: bool = True,
) -> KDLoss:
    """kl_weight·T²·KL(teacher ‖ student) + alpha·CE, chunked over positions.

    Only `loss` carries gradients when `fused` (the default; see the module docstring); `kl` and
    `ce` are then metrics, so weight them here, not by combining them afterwards.

    student_hidden: [B, L, H] final (normed) hidden states; student_head: [V, H] lm_head weight.
    The teacher comes in exactly one form:
      - teacher_logits [B, L, V];
      - teacher_hidden [B, L, Ht] + teacher_head [V, Ht] (+ teacher_logit_fn): its logits are
        made per chunk too;
      - teacher_topk_logprobs + teacher_topk_ids [B, L, k]: log-probabilities of the teacher's
        distribution *already softened at `temperature`* and their token ids (see topk_cache);
        the teacher's remaining mass is matched against the student's mass outside those ids.
    """
    forms = {
        "logits": teacher_logits is not None,
        "hidden": teacher_hidden is not None or teacher_head is not None,
        "topk": teacher_topk_logprobs is not None or teacher_topk_ids is not None,
    }
    if sum(forms.values()) != 1:
        raise ValueError(
            f"kd_loss: give the teacher in exactly one form, got {[k for k, v in forms.items() if v]}"
        )
    mode = next(k for k, v in forms.items() if v)
    if mode == "hidden" and (teacher_hidden is None or teacher_head is None):
        raise ValueError("kd_loss: teacher_hidden needs teacher_head (and vice versa)")
    if mode == "topk" and (teacher_topk_logprobs is None or teacher_topk_ids is None):
        raise ValueError("kd_loss: teacher_topk_logprobs needs teacher_topk_ids (and vice versa)")
    if alpha and labels is None:
        raise ValueError("kd_loss: alpha > 0 needs labels")

    batch, length, hid = student_hidden.shape
    idx, targets = counted_positions((batch, length), labels, attention_mask, student_hidden.device)
    if mode == "logits":
        teacher_flat = (teacher_logits.reshape(batch * length, -1),)
    elif mode == "hidden":
        teacher_flat = (teacher_hidden.reshape(batch * length, -1), teacher_head)
    else:
        k = teacher_topk_ids.shape[-1]
        teacher_flat = (teacher_topk_logprobs.reshape(-1, k), teacher_topk_ids.reshape(-1, k).long())

    n = idx.numel()
    chunks = [
        (
            slice(start, start + chunk_size),
            None if targets is None else targets[start : start + chunk_size],
            tuple(t if (mode == "hidden" and i == 1) else t[idx[start : start + chunk_size]]
                  for i, t in enumerate(teacher_flat)),  # teacher_head is shared, not per position
        )  # fmt: skip
        for start in range(0, n, chunk_size)
    ]
    loss_args = (mode, temperature, student_logit_fn, teacher_logit_fn)
    weights = torch.tensor([kl_weight * temperature**2, alpha], dtype=torch.float32, device=student_hidden.device)
    h = student_hidden.reshape(-1, hid)[idx]
    wants_grad = torch.is_grad_enabled() and (student_hidden.requires_grad or student_head.requires_grad)
    if wants_grad and fused and n:
        loss, total = _FusedHeadLoss.apply(h, student_head, weights, chunks, loss_args)
    else:
        total = student_hidden.new_zeros(2, dtype=torch.float32)
        for sl, tgt, teacher in chunks:
            args = (h[sl], student_head, tgt, teacher, *loss_args)
            total = total + (checkpoint(_chunk, *args, use_reentrant=False) if wants_grad else _chunk(*args))
        if n == 0:  # nothing counts (all padding): a zero that still has a graph, so backward() works
            total = total + 0 * (student_hidden.sum() + student_head.sum())
        loss = (total * weights).sum()
    kl, ce = total[0] / max(n, 1), total[1] / max(n, 1)
    return KDLoss(loss=loss / max(n, 1), kl=kl, ce=ce, n_tokens=n)
