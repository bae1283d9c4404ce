"""The KD step as public components: the student's side of the loss, the teacher's (online or
from the top-k cache), and one call that joins them, shared by the KD and SFT stages and the
benchmarks.

    objective = kd_objective(cfg.kd)
    teacher = OnlineTeacher(teacher_model)            # or CachedTeacher(TopKCache(...))
    res = kd_step(student, batch, teacher, objective)  # res.loss includes the routers' losses
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from aetheris.distill.config import KDConfig, RunConfig
from aetheris.distill.losses import (
    KDLoss,
    KDObjective,
    LogitFn,
    TeacherHidden,
    TeacherSignal,
    TeacherTopK,
    compute_dtype,
    logit_transform,
)
from aetheris.distill.topk_cache import TopKCache, build_topk_cache, rows_fingerprint
from aetheris.progress import track

# logits_to_keep=<empty index>: the model returns no logits at all, only hidden states.
NO_LOGITS = torch.empty(0, dtype=torch.long)
TeacherFn = Callable[[dict[str, torch.Tensor]], TeacherSignal]


def kd_objective(kd: KDConfig, **overrides: Any) -> KDObjective:
    """The run config's KD loss; SFT overrides the weights (alpha = 1, its kl_weight, T = 1). Group
    DRO on the excess CE also needs the teacher's CE at the labels."""
    args = dict(temperature=kd.temperature, alpha=kd.alpha, chunk_size=kd.chunk_size, fused=kd.fused_loss,
                teacher_ce=needs_teacher_ce(kd))  # fmt: skip
    return KDObjective(**{**args, **overrides})


def needs_teacher_ce(kd: KDConfig) -> bool:
    """Whether the run's group DRO signal is the excess CE (the teacher's CE at the labels needed)."""
    return kd.weighting == "group_dro" and kd.dro_signal == "excess_ce"


def _with_bias(fn: LogitFn | None, bias: torch.Tensor | None) -> LogitFn | None:
    """`fn(logits + bias)`: a head with a bias (Phi) adds it before the scale and the cap."""
    if bias is None:
        return fn
    return lambda logits: (logits + bias) if fn is None else fn(logits + bias)


def _student_logit_fn(student: torch.nn.Module) -> LogitFn | None:
    c = student.config
    return _with_bias(logit_transform(c.logit_scale, c.final_logit_softcapping), student.lm_head.bias)


@dataclass
class StudentOutput:
    hidden: torch.Tensor  # [B, L, H] final normed hidden states
    head: torch.Tensor  # [V, H] lm_head weight
    logit_fn: LogitFn | None
    router_loss: torch.Tensor | float  # load-balancing + z-loss in training mode, else 0


def student_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StudentOutput:
    """The student (possibly DDP-wrapped) on a batch, without full-vocabulary logits."""
    student = getattr(model, "module", model)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True,
                logits_to_keep=NO_LOGITS, use_cache=False)  # fmt: skip
    router = out.router_loss if out.router_loss is not None else 0.0  # training mode, MoE blocks only
    return StudentOutput(out.hidden_states[-1], student.lm_head.weight, _student_logit_fn(student), router)


class OnlineTeacher:
    """The teacher run on each batch: its last hidden state and head, so its logits are also made
    chunk by chunk inside the loss."""

    def __init__(self, teacher: torch.nn.Module) -> None:
        from aetheris.teacher import introspect

        # The spec knows the teacher's real logits: Cohere's/Granite's scale, the cap, Phi's head bias.
        spec = introspect(teacher)
        self.model = teacher
        self.head = spec.lm_head
        self.logit_fn = _with_bias(logit_transform(spec.logit_scale, spec.final_logit_softcap), spec.lm_head_bias)
        self._heads: dict[torch.dtype, torch.Tensor] = {}  # the frozen head in each compute dtype

    def head_in(self, dtype: torch.dtype) -> torch.Tensor:
        """The teacher's head in `dtype`, cast once: it is frozen, and a 262k-row cast per batch costs."""
        if dtype not in self._heads:
            self._heads[dtype] = self.head.to(dtype)
        return self._heads[dtype]

    def __call__(self, batch: dict[str, torch.Tensor]) -> TeacherHidden:
        with torch.no_grad():
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             output_hidden_states=True, logits_to_keep=NO_LOGITS)  # fmt: skip
        # Under bf16 autocast an fp32 head would be cast again in every chunk: pass it cast already.
        return TeacherHidden(out.hidden_states[-1], self.head_in(compute_dtype(self.head)), self.logit_fn)


class CachedTeacher:
    """The teacher's top-k log-probs (and label log-probs, where the cache has them) read from a
    cache by each batch's `row_id`."""

    def __init__(self, cache: TopKCache) -> None:
        self.cache = cache

    def __call__(self, batch: dict[str, torch.Tensor]) -> TeacherTopK:
        # Reading is no compute: CPU autocast has no rule for the cache's float16 (torch.cat fails).
        with torch.autocast(batch["input_ids"].device.type, enabled=False):
            if self.cache.has_labels:
                return TeacherTopK(*self.cache.lookup_with_labels(batch["row_id"]))
            return TeacherTopK(*self.cache.lookup(batch["row_id"]))


def topk_cache_key(cfg: RunConfig, tokenizer_hash: str, rows: Sequence[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """The key a run's top-k cache is built and read under; `rows_hash` ties it to these rows, so
    a cache folder shared by runs (kd.cache_dir) serves only runs over the same rows."""
    return dict(teacher_id=cfg.teacher.name, k=cfg.kd.top_k, temperature=cfg.kd.temperature,
                seq_len=cfg.kd_data.seq_len, tokenizer_hash=tokenizer_hash, rows_hash=rows_fingerprint(rows))  # fmt: skip


def build_run_cache(teacher: torch.nn.Module, rows: Sequence[dict[str, torch.Tensor]], cfg: RunConfig,
                    path: Any, key: dict[str, Any]) -> TopKCache:  # fmt: skip
    """Build (or reuse) the top-k cache over `rows` (each with a `row_id`) and open it; with the
    teacher's label log-probs when the run's group DRO signal is the excess CE."""
    batches = ({"input_ids": r["input_ids"][None], "attention_mask": r["attention_mask"][None],
                "row_ids": r["row_id"][None]} for r in rows)  # fmt: skip
    dtype = getattr(torch, cfg.kd.cache_dtype)
    labels = needs_teacher_ce(cfg.kd)
    build_topk_cache(teacher, batches, path, total_rows=len(rows), dtype=dtype, label_logprobs=labels, **key)
    return TopKCache(path, label_logprobs=labels, **key)


def kd_parameters(student: torch.nn.Module, kd: KDConfig) -> list[torch.nn.Parameter] | None:
    """What KD trains: everything (None), or all but the (tied) embedding and head when
    `kd.freeze_embeddings`; the fused loss then skips the head's gradient product."""
    if not kd.freeze_embeddings:
        return None
    frozen = {id(student.get_input_embeddings().weight), id(student.get_output_embeddings().weight)}
    return [p for p in student.parameters() if id(p) not in frozen]


def kd_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], teacher: TeacherFn,
            objective: KDObjective, row_weights: torch.Tensor | None = None) -> KDLoss:  # fmt: skip
    """The objective on one batch; in training the routers' load-balancing and z-losses are added
    to `loss`, as the model adds them to its own CE. `row_weights` [B]: see KDObjective (group DRO)."""
    s = student_forward(model, batch)
    res = objective(s.hidden, s.head, teacher(batch), labels=batch.get("labels"),
                    attention_mask=batch["attention_mask"], student_logit_fn=s.logit_fn,
                    row_weights=row_weights)  # fmt: skip
    res.loss = res.loss + s.router_loss
    return res


@torch.no_grad()
def held_out_row_sums(student: torch.nn.Module, rows: Sequence[dict[str, torch.Tensor]], teacher: TeacherFn,
                      objective: KDObjective, batch_size: int = 2,
                      progress: str | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """Per-row sums [len(rows)] over counted positions, the student in eval mode: `kl`, `ce` (the
    student's at the labels), `tokens`, and `teacher_ce` when the objective has teacher_ce.
    `progress`: a label for a bar over the rows (rate and ETA), for measurements of minutes."""
    student.eval()
    out: dict[str, list[torch.Tensor]] = {"kl": [], "ce": [], "tokens": [], "teacher_ce": []}
    starts = range(0, len(rows), batch_size)
    for i in track(starts, progress or "", disable=progress is None):
        batch = {k: torch.stack([r[k] for r in rows[i : i + batch_size]])
                 for k in ("input_ids", "attention_mask", "labels")}  # fmt: skip
        res = kd_step(student, batch, teacher, objective)
        out["kl"].append(res.row_kl.double().cpu())
        out["ce"].append(res.row_ce.double().cpu())
        out["tokens"].append(res.row_tokens.cpu())
        if res.row_teacher_ce is not None:
            out["teacher_ce"].append(res.row_teacher_ce.double().cpu())
    return {k: torch.cat(v) for k, v in out.items() if v}


def held_out_row_kl(student: torch.nn.Module, rows: Sequence[dict[str, torch.Tensor]], teacher: TeacherFn,
                    objective: KDObjective, batch_size: int = 2) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Summed KL and counted tokens of each row [len(rows)], the student in eval mode."""
    sums = held_out_row_sums(student, rows, teacher, objective, batch_size)
    return sums["kl"], sums["tokens"]


def held_out_kl(student: torch.nn.Module, rows: Sequence[dict[str, torch.Tensor]], teacher: TeacherFn,
                objective: KDObjective, batch_size: int = 2) -> float:  # fmt: skip
    """Mean KL per counted token over `rows`, the student in eval mode."""
    kl, tokens = held_out_row_kl(student, rows, teacher, objective, batch_size)
    return float(kl.sum()) / max(int(tokens.sum()), 1)
