"""Equity-aware KD: online group DRO over language groups (Sagawa et al. 2020, ICLR).

Each group g (a language family, WALS group, region or single language: the fields of
`aetheris.languages`) has a weight q_g, uniform at the start (`kd.dro_prior: uniform`, the
paper's), or each group's share of the KD rows (`data`). The training loss is Σ_g q_g L_g,
where L_g is the group's mean per-token KD loss in the batch (a group absent from the batch adds
nothing, as in the paper's code: it has no gradient there; with many small groups, e.g.
`language`, and small batches, the present groups' q mass, and so the gradient's scale, varies
from batch to batch), and after every optimizer step

    q_g ∝ q_g · exp(η · L̂_g)

with L̂_g the group's KL per token in that step (over all micro-batches and processes),
exponentially smoothed by `smoothing` (0 = the step's own value, as in the paper); a group absent
from the step keeps its last L̂_g, so it still competes at its running loss. A group that has never
appeared keeps its initial weight: the exponentiated step renormalises only the groups that have a
loss estimate. No q_g falls below `floor`/G (a fraction of the uniform weight): weights that
would are set to it and the others rescaled.

Why this is DoReMi without a reference model: the per-token KL to the teacher is already an
*excess* loss over the teacher,

    KL(p_teacher ‖ p_student) = CE(p_teacher, p_student) − H(p_teacher),

the student's cross-entropy against the teacher's distribution minus the loss the teacher itself
pays (its entropy). DoReMi (Xie et al. 2023) weights domains by the student's loss minus a
reference model's; in KD the teacher is that reference, and the subtraction is done exactly per
token. So a group with a high KL is one the student is losing on relative to what the teacher
achieves there, not merely a hard (high-entropy) language. tests/test_group_dro.py checks the
identity on the objective's own per-row sums.

The signal (`kd.dro_signal`). KL is an excess over the teacher's *distribution*; what the study's
FLORES drop measures is the excess over the teacher's loss *at the text's own tokens*, per byte:

    excess_ce_g = Σ_rows (CE_student − CE_teacher at the labels) / ln 2 / Σ_rows UTF-8 bytes,

in bits per byte, the unit of a bits-per-byte drop (`excess_ce`). On gemma3-270m's probed student
the per-family KL had Spearman +0.23 with the family's FLORES drop (BENCHMARKS §13c), so DRO on KL
up-weighted families that the drop did not count as losing. Per byte, not per token, because
tokenizers split scripts very differently and the drop is per byte. The teacher's CE at the labels
comes from the online teacher, or from a top-k cache built with `label_logprobs`.

Two ways to spend q (`kd.reweight`):
- `loss`: every row's KD terms are scaled so that the batch loss is Σ_g q_g · (group g's mean per
  token), through `KDObjective(row_weights=...)` (no full-vocabulary logits);
- `sampling`: the loss stays the plain per-token mean and the rows are drawn with group
  probabilities q instead (`aetheris.data.mixture.GroupedOrder`): it spends tokens, not gradient.
  Both estimate the same objective; from the uniform prior either is group-balanced at η = 0.

The prior (`kd.dro_prior`). After T steps q_g ∝ q0_g · exp(η Σ_t L̂_g,t): a tilt of q0 towards the
losing groups. With q0 uniform over families, η = 0 is already far from uniform KD when the groups
differ in size: 35 of SIB-200's 69 languages are Indo-European, so family-balanced sampling draws
them at 1/13 instead of about half (BENCHMARKS §13f), and q then moves back towards them. With
`data`, q0 is each group's share of the KD rows, so η = 0 spends tokens (or gradient, in
expectation) as uniform KD does, and η alone measures what the tilt buys.

q, L̂ and the sampler's position are training state: saved in every checkpoint (JSON floats, which
round-trip exactly) and restored on `--resume`; q is logged as `q/<group>` at every logged step
(metrics.jsonl and TensorBoard: one line per group).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from aetheris import languages
from aetheris.data.mixture import GroupedOrder
from aetheris.distill.losses import KDLoss, counted_positions

WEIGHTINGS = ("uniform", "group_dro")
GROUP_FIELDS = ("family", "group", "region", "language")
REWEIGHTS = ("loss", "sampling")
DRO_SIGNALS = ("kl", "excess_ce")
DRO_PRIORS = ("uniform", "data")


def group_of(lang: str, field: str) -> str:
    """The group a language belongs to: its registry `field`, or its canonical code for `language`."""
    entry = languages.get(lang)
    return entry.code if field == "language" else getattr(entry, field)


def counted_tokens(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """[B] positions per row that the KD objective counts (same rule: mask and labels)."""
    ids = batch["input_ids"]
    idx, _ = counted_positions(tuple(ids.shape), batch.get("labels"), batch.get("attention_mask"), ids.device)
    return torch.bincount(idx // ids.shape[1], minlength=ids.shape[0])


def target_bytes(batch: Mapping[str, torch.Tensor], tokenizer: Any) -> torch.Tensor:
    """[B] UTF-8 bytes of each row's counted next tokens: the denominator of bits per byte."""
    ids = batch["input_ids"]
    idx, targets = counted_positions(tuple(ids.shape), batch.get("labels"), batch.get("attention_mask"), ids.device)
    if targets is None:
        raise ValueError("target_bytes: the excess-CE signal needs labels in the batch")
    rows = (idx // ids.shape[1]).cpu()
    targets = targets.cpu()
    return torch.tensor([len(tokenizer.decode(targets[rows == r].tolist()).encode("utf-8"))
                         for r in range(ids.shape[0])])  # fmt: skip


def _floored(q: torch.Tensor, low: float) -> torch.Tensor:
    """q (summing to m) with no entry below `low`, keeping the sum: clamp, rescale the rest, repeat."""
    mass, fixed = float(q.sum()), torch.zeros_like(q, dtype=torch.bool)
    out = q.clone()
    while True:
        free = ~fixed
        out[free] = q[free] / q[free].sum() * (mass - low * int(fixed.sum()))
        below = free & (out < low)
        if not below.any():
            return out
        fixed |= below
        out[below] = low


class GroupDRO:
    """The group weights q and their online update; plain tensors (float64, CPU) throughout.
    `signal` names the loss being observed (its metrics are `group_<signal>/<group>`)."""

    def __init__(self, groups: Sequence[str], eta: float, floor: float = 0.0, smoothing: float = 0.0,
                 signal: str = "kl", prior: Sequence[float] | None = None) -> None:  # fmt: skip
        if not groups or len(set(groups)) != len(groups):
            raise ValueError(f"GroupDRO: expected distinct group names, got {list(groups)}")
        if eta < 0 or not 0 <= floor <= 1 or not 0 <= smoothing < 1:
            raise ValueError(f"GroupDRO: need eta >= 0, 0 <= floor <= 1, 0 <= smoothing < 1; "
                             f"got {eta}, {floor}, {smoothing}")  # fmt: skip
        if signal not in DRO_SIGNALS:
            raise ValueError(f"GroupDRO: signal must be one of {DRO_SIGNALS}, got {signal!r}")
        self.groups, self.eta, self.smoothing, self.signal = list(groups), eta, smoothing, signal
        n = len(groups)
        self.low = floor / n  # the floor as an absolute weight
        if prior is None:
            self.q = torch.full((n,), 1.0 / n, dtype=torch.float64)
        else:
            q0 = torch.tensor(list(prior), dtype=torch.float64)
            if q0.shape != (n,) or not bool((q0 > 0).all()):
                raise ValueError(f"GroupDRO: the prior needs one positive weight per group, got {list(prior)}")
            self.q = _floored(q0 / q0.sum(), self.low)
        self.loss = torch.zeros(n, dtype=torch.float64)  # L̂_g, meaningful where seen
        self.seen = torch.zeros(n, dtype=torch.bool)
        self.reset_step()

    def reset_step(self) -> None:
        self.step_loss = torch.zeros(len(self.groups), dtype=torch.float64)
        self.step_count = torch.zeros(len(self.groups), dtype=torch.float64)

    def row_weights(self, group: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[B] factors that turn the objective's per-token mean into Σ_g q_g · (group g's mean):
        row r of group g weighs q_g · n / n_g (n counted positions in the batch, n_g in group g)."""
        g, tokens = group.long().cpu(), tokens.double().cpu()
        n_g = torch.zeros(len(self.groups), dtype=torch.float64).index_add_(0, g, tokens)
        return (self.q[g] * tokens.sum() / n_g[g].clamp(min=1)).float()

    def observe(self, group: torch.Tensor, row_loss: torch.Tensor, row_count: torch.Tensor) -> None:
        """Add one micro-batch's per-row loss sums and what they are per (counted positions for KL,
        bytes for the excess CE) to this step's totals."""
        g = group.long().cpu()
        self.step_loss.index_add_(0, g, row_loss.detach().double().cpu())
        self.step_count.index_add_(0, g, row_count.double().cpu())

    def update(self, loss: torch.Tensor | None = None, count: torch.Tensor | None = None) -> None:
        """The exponentiated-gradient step from this step's totals (default: the observed ones)."""
        loss = self.step_loss if loss is None else loss.double().cpu()
        count = self.step_count if count is None else count.double().cpu()
        present = count > 0
        step_loss = loss / count.clamp(min=1)
        s = self.smoothing
        self.loss = torch.where(present & self.seen, s * self.loss + (1 - s) * step_loss, self.loss)
        self.loss = torch.where(present & ~self.seen, step_loss, self.loss)
        self.seen |= present
        self.reset_step()
        known = self.seen
        if not known.any():
            return
        # The groups never seen keep their weight; the known ones share the rest of the mass.
        mass = 1.0 - float(self.q[~known].sum())
        lk = self.loss[known]
        w = self.q[known] * torch.exp(self.eta * (lk - lk.max()))  # shifted: no overflow, same ratios
        self.q[known] = _floored(w / w.sum() * mass, self.low)

    def metrics(self) -> dict[str, float]:
        """q per group, and L̂ per group that has been seen."""
        out = {f"q/{g}": float(q) for g, q in zip(self.groups, self.q)}
        out |= {f"group_{self.signal}/{g}": float(v) for g, v, s in zip(self.groups, self.loss, self.seen) if s}
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"groups": self.groups, "q": self.q.tolist(), "loss": self.loss.tolist(), "seen": self.seen.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["groups"]) != self.groups:
            raise ValueError(f"group DRO state is for groups {state['groups']}, this run has {self.groups}")
        self.q = torch.tensor(state["q"], dtype=torch.float64)
        self.loss = torch.tensor(state["loss"], dtype=torch.float64)
        self.seen = torch.tensor(state["seen"], dtype=torch.bool)
        self.reset_step()


class GroupDROHook:
    """Group DRO as a training-loop hook (`trainer.train(hooks=[...], order=hook.order)`).

    The stage's step_fn asks `row_weights(batch)` (None under sampling) before the loss and calls
    `observe(batch, res)` after it; `end_step` reduces the step's per-group totals over processes,
    updates q and hands it to the sampler. Under the excess-CE signal, `row_bytes(batch)` gives each
    row's UTF-8 bytes (`target_bytes` with the run's tokenizer)."""

    name = "group_dro"

    def __init__(self, dro: GroupDRO, order: GroupedOrder | None = None, row_groups: Sequence[int] = (),
                 row_bytes: Callable[[Mapping[str, torch.Tensor]], torch.Tensor] | None = None) -> None:  # fmt: skip
        if dro.signal == "excess_ce" and row_bytes is None:
            raise ValueError("GroupDROHook: the excess_ce signal needs row_bytes (bits per byte)")
        self.dro, self.order, self.row_groups, self.row_bytes = dro, order, list(row_groups), row_bytes
        if order is not None:
            order.set_probs(dro.q.numpy())

    def row_weights(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        if self.order is not None:  # sampling: q shapes the draws, not the loss
            return None
        return self.dro.row_weights(batch["group"], counted_tokens(batch)).to(batch["input_ids"].device)

    def observe(self, batch: Mapping[str, torch.Tensor], res: KDLoss) -> None:
        if self.dro.signal == "kl":
            self.dro.observe(batch["group"], res.row_kl, res.row_tokens)
            return
        if res.row_teacher_ce is None:
            raise ValueError("group DRO on the excess CE: the KD objective gave no teacher CE (teacher_ce=False)")
        excess_bits = (res.row_ce - res.row_teacher_ce).double() / math.log(2)
        self.dro.observe(batch["group"], excess_bits, self.row_bytes(batch))

    def end_step(self, acc: Any, samples_seen: int) -> dict[str, float]:
        totals = torch.stack([self.dro.step_loss, self.dro.step_count]).to(acc.device)
        totals = acc.reduce(totals, reduction="sum").cpu()
        if self.order is not None:
            self.order.draw_until(samples_seen)  # the step's whole window, under the q it was drawn with
        self.dro.update(totals[0], totals[1])
        if self.order is not None:
            self.order.set_probs(self.dro.q.numpy())
        return self.dro.metrics()

    def state_dict(self) -> dict[str, Any]:
        state = {"dro": self.dro.state_dict()}
        if self.order is not None:
            state["order"] = self.order.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.dro.load_state_dict(state["dro"])
        if self.order is not None:
            if "order" not in state:
                raise ValueError("group DRO state has no sampler position: it was saved with kd.reweight: loss")
            self.order.load_state_dict(state["order"])
            self.order.set_probs(self.dro.q.numpy())


def group_dro_hook(langs: Sequence[str], field: str, *, eta: float, floor: float, smoothing: float,
                   reweight: str, seed: int, signal: str = "kl", tokenizer: Any = None,
                   prior: str = "uniform") -> GroupDROHook:  # fmt: skip
    """The hook over rows whose languages are `langs` (row i's is langs[i]); the groups are those
    of the rows (sorted), and `hook.row_groups[i]` is row i's group index, which the rows must
    carry as `row["group"]` (`aetheris.data.mixture.TaggedRows`). The excess-CE signal needs the
    rows' `tokenizer` (to count bytes). `prior` "data" starts q at the groups' shares of the rows."""
    if signal == "excess_ce" and tokenizer is None:
        raise ValueError("group_dro_hook: the excess_ce signal needs the tokenizer (bits per byte)")
    names = [group_of(lang, field) for lang in langs]
    groups = sorted(set(names))
    index = {g: i for i, g in enumerate(groups)}
    row_groups = [index[n] for n in names]
    order = GroupedOrder(row_groups, len(groups), seed) if reweight == "sampling" else None
    row_bytes = (lambda batch: target_bytes(batch, tokenizer)) if signal == "excess_ce" else None
    shares = np.bincount(row_groups, minlength=len(groups)) / len(row_groups) if prior == "data" else None
    return GroupDROHook(GroupDRO(groups, eta, floor, smoothing, signal, shares), order, row_groups, row_bytes)
