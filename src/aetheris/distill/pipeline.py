"""The distillation recipe: one run config, four stages, each reading the last one's output.

    output_dir/init/     student built from the teacher (stage 1a)
    output_dir/align/    SSM blocks aligned to their teacher attention (stage 1b)
    output_dir/kd/       after KL distillation on the multilingual corpus (stage 2)
    output_dir/sft/      after chat + tool-calling SFT (stage 3)
    output_dir/student/  the final HF model directory, tokenizer, chat template and model card

Each stage writes its model directory atomically (temp + rename) and trains through the one
loop in `trainer.py`, so `--resume` continues a killed stage from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from aetheris.data.chat import ensure_chat_template, render_chat
from aetheris.data.mixture import IndexedRows, MixtureSampler, PackedBatches, TaggedRows, bos_id
from aetheris.data.sources import Example, LoadSummary, embedded_corpus, read_sources
from aetheris.distill.align import align_student
from aetheris.distill.attention_probe import LayerProbe, probe_attention, probe_key
from aetheris.distill.calibration import influence_scores, mlp_inputs
from aetheris.distill.config import DataConfig, RunConfig
from aetheris.distill.group_dro import group_dro_hook, group_of
from aetheris.distill.init import init_student, student_config
from aetheris.distill.kd import (
    CachedTeacher,
    OnlineTeacher,
    build_run_cache,
    held_out_row_kl,
    kd_objective,
    kd_parameters,
    kd_step,
    topk_cache_key,
)
from aetheris.distill.layer_map import place_attention, resolve_layer_map
from aetheris.distill.topk_cache import tokenizer_fingerprint
from aetheris.distill.trainer import train
from aetheris.errors import BadValueError, MissingPathError
from aetheris.model import AetherisForCausalLM
from aetheris.precision import resolve_bf16
from aetheris.teacher import introspect, load_teacher
from aetheris.teacher.spec import TeacherSpec

logger = logging.getLogger(__name__)


class Run:
    """What every stage shares: the config, the teacher (loaded once), the data."""

    def __init__(self, cfg: RunConfig, resume: bool = False) -> None:
        self.cfg, self.resume = cfg, resume
        self.out = Path(cfg.output_dir)
        self.summary = LoadSummary()
        self._teacher = None
        self.log: dict[str, Any] = {}

    @property
    def teacher(self):
        if self._teacher is None:
            self._teacher = load_teacher(self.cfg.teacher.name, dtype=self.cfg.teacher.dtype)
            if self._teacher.tokenizer is None:
                raise BadValueError(f"teacher {self.cfg.teacher.name!r} has no tokenizer: the student needs one")
            if ensure_chat_template(self._teacher.tokenizer):  # base models ship none; SFT needs one
                logger.warning(
                    "teacher tokenizer has no chat template: using aetheris.data.chat.FALLBACK_CHAT_TEMPLATE"
                )
            logger.info("teacher %s loaded in %.0fs", self.cfg.teacher.name, self._teacher.seconds)
        return self._teacher

    def examples(self, specs: list[str], kind: str = "text", held_out: bool | None = False) -> list[Example]:
        """`embedded` names the built-in corpus (its last paragraph per language is held out for
        evaluation, the rest trains; held_out=None takes both), `embedded:tools` the tool-calling
        training split as chats; anything else is a file, folder or hf: id."""
        out: list[Example] = []
        for spec in specs:
            if spec == "embedded:tools" and kind == "chat":
                out += _tool_chats()
            elif spec in ("embedded", f"embedded:{kind}"):
                rows = embedded_corpus(kind, self.summary)
                last = {e.lang: i for i, e in enumerate(rows)}  # index of each language's last row
                out += [e for i, e in enumerate(rows) if held_out is None or (last[e.lang] == i) == held_out]
            else:
                out += [
                    e
                    for e in read_sources([spec], self.summary)
                    if (e.text if kind == "text" else e.messages)
                ]
        if not out:
            raise BadValueError(f"data: no usable {kind} rows in {specs} (skipped: {self.summary.as_dict()})")
        return out

    def packed(
        self, specs: list[str], rows: int, seed: int, held_out: bool = False, keep_lang: bool = False,
        data: DataConfig | None = None,
    ) -> list[dict[str, Any]]:
        """`rows` packed sequences of seq_len tokens, languages balanced by tau; `keep_lang` adds
        each row's language (the one it starts in) as `row["lang"]`. Packing follows `data`
        (default the run's data section)."""
        tok, d = self.teacher.tokenizer, data or self.cfg.data
        sampler = MixtureSampler(self.examples(specs, held_out=held_out), tau=d.tau, seed=seed)
        batches = PackedBatches(sampler, tok, d.seq_len, batch_size=1, by_language=d.pack == "language",
                                bos=bos_id(tok, d.bos))  # fmt: skip
        out = []
        for _ in range(rows):
            batch = next(batches)
            row = {k: v[0] for k, v in batch.items() if isinstance(v, torch.Tensor)}
            if keep_lang:
                row["lang"] = batch["langs"][0]
            out.append(row)
        return out

    def kd_rows(self, n: int, seed: int) -> tuple[Sequence[dict[str, Any]], list[str]]:
        """KD's `n` training rows (from `kd.data`, else the run's data) and each row's language.
        Packed up front from one stream, or with `lazy_rows` built when the trainer reads them."""
        d = self.cfg.kd_data
        if d.lazy_rows:
            tok = self.teacher.tokenizer
            rows = IndexedRows(self.examples(d.train), tok, d.seq_len, n, tau=d.tau, seed=seed,
                               by_language=d.pack == "language", bos=bos_id(tok, d.bos))  # fmt: skip
            langs = [rows.lang(i) for i in range(n)]
        else:
            rows = self.packed(d.train, n, seed=seed, keep_lang=True, data=d)
            langs = [r.pop("lang") for r in rows]
        return rows, langs

    def load_stage(self, stage: str) -> AetherisForCausalLM:
        path = self.out / stage
        if not (path / "config.json").exists():
            raise MissingPathError(f"{path}: stage '{stage}' has not been run (run the stages in order)")
        return AetherisForCausalLM.from_pretrained(path, dtype=torch.float32)

    def save_stage(self, model: AetherisForCausalLM, stage: str, note: dict[str, Any]) -> Path:
        """Write the model directory to a temp folder and rename it into place."""
        final = self.out / stage
        tmp = self.out / f".tmp-{stage}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        if self.teacher.tokenizer is not None:
            self.teacher.tokenizer.save_pretrained(tmp)
        (tmp / "stage.json").write_text(json.dumps(note, indent=1, default=str))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        self.log[stage] = note
        if not self.cfg.keep_stage_checkpoints:
            self._drop_checkpoints(stage)
        return final

    def _drop_checkpoints(self, stage: str) -> None:
        """Once a stage's folder is written its checkpoints resume nothing, and at full depth they
        hold GBs of optimizer state (five 36-block probe runs filled a 56 GB disk)."""
        runs = self.out / "runs" / stage
        freed = 0
        for ckpt in sorted(runs.glob("**/checkpoints")) if runs.is_dir() else []:
            freed += sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
            shutil.rmtree(ckpt, ignore_errors=True)
        if freed:
            logger.info("stage %s: removed its training checkpoints (%.1f MB)", stage, freed / 2**20)


def _rows(run: Run, specs: list, n: int, seed: int, held_out: bool = False) -> dict[str, torch.Tensor]:
    rows = run.packed(specs, n, seed=seed, held_out=held_out)
    return {k: torch.stack([r[k] for r in rows]) for k in ("input_ids", "attention_mask")}


def attention_layout(run: Run, spec: TeacherSpec, influence: list[float] | None) -> tuple[str, dict[str, Any]]:
    """The layout with `A` where `student.attention_layers` keeps attention, and what to record."""
    s = run.cfg.student
    mapping = resolve_layer_map(s.layer_map, spec.num_layers, s.layout, influence)
    mixers = mapping[: sum(c in "SA" for c in s.layout)]
    scores, record = None, {}
    if s.attention_layers == "probe":
        probe = probe_student_layers(run, spec, sorted(set(mixers)))
        scores = {r.teacher_layer: r.held_out_kl for r in probe}
        record["attention_probe"] = {str(t): kl for t, kl in scores.items()}
    try:
        layout = place_attention(s.layout, mapping, s.attention_layers, s.attention_fraction, scores)
    except ValueError as err:
        raise BadValueError(f"student.attention_layers: {err}") from None
    kinds = [c for c in layout if c in "SA"]
    record["attention_layers"] = [t for t, c in zip(mixers, kinds) if c == "A"]
    record["attention_placement"] = s.attention_layers if isinstance(s.attention_layers, str) else "explicit"
    logger.info("init: attention kept on teacher layers %s (%s): layout %s", record["attention_layers"],
                record["attention_placement"], layout)  # fmt: skip
    return layout, record


def probe_student_layers(run: Run, spec: TeacherSpec, layers: list[int]) -> list[LayerProbe]:
    """attention_probe over `layers` with the run's data, align budget and student overrides."""
    cfg, p = run.cfg, run.cfg.student.probe
    align = cfg.train.align.model_copy(update={"steps": p.align_steps or cfg.train.align.steps, "checkpoint_every": 0})
    n_calib = p.calibration_samples or cfg.align.calibration_samples
    calib = _rows(run, cfg.data.train, n_calib, seed=align.seed)
    # Another seed than KD's held-out rows: the layout is chosen on these, KD is judged on those.
    held = run.packed(cfg.data.eval or cfg.data.train, p.held_out_rows, seed=align.seed + 2, held_out=True)
    bf16 = resolve_bf16(align.bf16, "cuda" if torch.cuda.is_available() else "cpu", "attention probe")
    key = probe_key(cfg.teacher.name, align, teacher_dtype=cfg.teacher.dtype, loss=cfg.align.loss,
                    calibration_samples=n_calib, held_out_rows=p.held_out_rows, bf16=bf16,
                    data=cfg.data.model_dump(mode="json"), overrides=cfg.student.overrides)  # fmt: skip
    return probe_attention(run.teacher.model, spec, layers, calib, held, align, run.out, key, loss=cfg.align.loss,
                           bf16=bf16, **cfg.student.overrides)  # fmt: skip


def stage_init(run: Run) -> Path:
    cfg, t = run.cfg, run.teacher
    spec = introspect(t.model)
    # Calibration text feeds the block-influence layer map (which the align stage follows for any
    # init) and the split's k-means (teacher init only: a random student copies nothing).
    want_influence = cfg.student.layer_map == "block-influence"
    want_split = cfg.student.experts == "split" and cfg.student.init == "teacher"
    influence = calibration = None
    if want_influence or want_split:
        calib = run.packed(cfg.data.train, cfg.align.calibration_samples, seed=cfg.train.align.seed)
        ids = torch.stack([r["input_ids"] for r in calib])
        mask = torch.stack([r["attention_mask"] for r in calib])
        influence = influence_scores(t.model, ids, mask) if want_influence else None
    layout, placed = cfg.student.layout, {}
    if cfg.student.attention_layers is not None:
        layout, placed = attention_layout(run, spec, influence)
    config = student_config(spec, layout=layout, layer_map=cfg.student.layer_map,
                            experts=cfg.student.experts, influence=influence, init=cfg.student.init,
                            split_router=cfg.student.split_router, split_partition=cfg.student.split_partition,
                            **cfg.student.overrides)  # fmt: skip
    config.distillation["teacher"] = cfg.teacher.name
    config.distillation.update({k: v for k, v in placed.items() if k != "attention_probe"})
    if want_split:
        calibration = mlp_inputs(t.model, ids, config.distillation["layer_map"], mask)
    student = init_student(spec, config, calibration, seed=cfg.train.align.seed)
    note = {"init": cfg.student.init, "layer_map": config.distillation["layer_map"], "experts": cfg.student.experts,
            **{k: config.distillation[k] for k in ("split_router", "split_partition") if k in config.distillation},
            "layout": layout, **placed, "parameters": student.num_parameters(), "active_parameters": student.active_parameters(),
            "teacher_parameters": spec.num_parameters()}  # fmt: skip
    logger.info("init: %s", note)
    return run.save_stage(student, "init", note)


def stage_align(run: Run) -> Path:
    cfg, t = run.cfg, run.teacher
    student = run.load_stage("init")
    calib = run.packed(cfg.data.train, cfg.align.calibration_samples, seed=cfg.train.align.seed)
    ids = torch.stack([r["input_ids"] for r in calib])
    mask = torch.stack([r["attention_mask"] for r in calib])
    report = align_student(student, t.model, ids, cfg.train.align, run.out / "runs" / "align", mask,
                           introspect(t.model), resume=run.resume, moe=cfg.align.moe,
                           loss=cfg.align.loss, moe_lr_scale=cfg.align.moe_lr_scale,
                           inputs=cfg.align.inputs)  # fmt: skip
    note = {"layers": [vars(r) for r in report]}
    return run.save_stage(student, "align", note)


def kl_by_group(row_kl: torch.Tensor, row_tokens: torch.Tensor, groups: list[str]) -> dict[str, float]:
    """Mean KL per counted token of each group's rows."""
    out = {}
    for g in sorted(set(groups)):
        pick = torch.tensor([x == g for x in groups])
        out[g] = float(row_kl[pick].sum()) / max(int(row_tokens[pick].sum()), 1)
    return out


def stage_kd(run: Run) -> Path:
    cfg, t = run.cfg, run.teacher
    student = run.load_stage("align")
    budget = cfg.train.kd
    n_rows = budget.steps * budget.batch_size * budget.grad_accum
    base, langs = run.kd_rows(n_rows, seed=budget.seed)
    data = cfg.kd_data
    held_out = run.packed(data.eval or data.train, cfg.kd.held_out_rows, seed=budget.seed + 1,
                          held_out=True, keep_lang=True, data=data)  # fmt: skip
    held_groups = [group_of(r.pop("lang"), cfg.kd.groups) for r in held_out]
    dro = None
    if cfg.kd.weighting == "group_dro":
        dro = group_dro_hook(langs, cfg.kd.groups, eta=cfg.kd.dro_eta, floor=cfg.kd.dro_floor,
                             smoothing=cfg.kd.dro_smoothing, reweight=cfg.kd.reweight, seed=budget.seed,
                             signal=cfg.kd.dro_signal, tokenizer=t.tokenizer, prior=cfg.kd.dro_prior)  # fmt: skip
        logger.info("kd: group DRO over %d %s groups (%s, %s, %s prior), eta %g", len(dro.dro.groups),
                    cfg.kd.groups, cfg.kd.reweight, cfg.kd.dro_signal, cfg.kd.dro_prior, cfg.kd.dro_eta)  # fmt: skip
        q0 = dict(zip(dro.dro.groups, dro.dro.q.tolist()))  # what step 1 uses: the prior, floored
    # Tags are added as rows are read, so rows built on demand (data.lazy_rows) carry them too.
    rows = TaggedRows(base, row_id=range(n_rows), **({"group": dro.row_groups} if dro else {}))
    objective = kd_objective(cfg.kd)
    online = OnlineTeacher(t.model)
    teacher = online
    if cfg.kd.top_k_cache:
        key = topk_cache_key(cfg, tokenizer_fingerprint(t.tokenizer), rows)
        teacher = CachedTeacher(build_run_cache(t.model, rows, cfg, cfg.kd.cache_dir or run.out / "topk-cache", key))
    kl_before = held_out_row_kl(student, held_out, online, objective)

    def step_fn(model, batch):
        res = kd_step(model, batch, teacher, objective, dro.row_weights(batch) if dro else None)
        if dro:
            dro.observe(batch, res)
        return {"loss": res.loss, "kl": res.kl, "ce": res.ce}

    started = time.perf_counter()
    train(student, rows, step_fn, budget, run.out / "runs" / "kd", resume=run.resume, stage="kd",
          parameters=kd_parameters(student, cfg.kd), order=dro.order if dro else None,
          hooks=[dro] if dro else [])  # fmt: skip
    kl_after = held_out_row_kl(student, held_out, online, objective)
    before, after = (float(kl.sum()) / max(int(n.sum()), 1) for kl, n in (kl_before, kl_after))
    tokens = n_rows * data.seq_len  # packed rows are always full
    note = {"held_out_kl_before": before, "held_out_kl_after": after, "held_out_rows": len(held_out),
            "tokens": tokens, "seconds": time.perf_counter() - started, "top_k_cache": cfg.kd.top_k_cache,
            "weighting": cfg.kd.weighting, "groups": cfg.kd.groups}  # fmt: skip
    if data.pack == "language":  # a mixed row's tag is only its first document's language
        note |= {"held_out_kl_by_group_before": kl_by_group(*kl_before, held_groups),
                 "held_out_kl_by_group_after": kl_by_group(*kl_after, held_groups)}  # fmt: skip
    if dro:
        note["group_dro"] = {"reweight": cfg.kd.reweight, "signal": cfg.kd.dro_signal, "eta": cfg.kd.dro_eta,
                             "floor": cfg.kd.dro_floor, "prior": cfg.kd.dro_prior,
                             "smoothing": cfg.kd.dro_smoothing, "q0": q0,
                             "q": dict(zip(dro.dro.groups, dro.dro.q.tolist()))}  # fmt: skip
    logger.info("kd: held-out KL %.4f -> %.4f over %d tokens", before, after, tokens)
    return run.save_stage(student, "kd", note)


def _tool_chats() -> list[Example]:
    """The tool-calling training split as conversations whose answer is the gold call."""
    from importlib import resources

    from aetheris.toolcall.format import read_items

    with resources.as_file(resources.files("aetheris") / "data" / "toolcall" / "train.jsonl") as p:
        items = read_items(p)
    chats = []
    for item in items:
        calls = [{"type": "function", "function": {"name": g.name, "arguments": {
            k: v[0] for k, v in g.arguments.items() if v and v[0] != ""}}} for g in item.gold]  # fmt: skip
        answer = {"role": "assistant", "tool_calls": calls} if calls else {
            "role": "assistant", "content": "None of the available tools can do this."}  # fmt: skip
        messages = [m.model_dump(exclude_none=True) for m in item.messages] + [answer]
        chats.append(
            Example(lang=item.lang, messages=tuple(messages), tools=tuple(t.model_dump() for t in item.tools))
        )
    return chats


def sft_chats(run: Run) -> list[Example]:
    """The SFT conversations: every source of sft.data, kept to sft.region / sft.languages."""
    return run.cfg.sft.keep(run.examples(run.cfg.sft.data, kind="chat", held_out=None), "sft")


def sft_start(run: Run) -> AetherisForCausalLM:
    """The model SFT trains: sft.start_from (e.g. the global run's kd/, shared by region runs), else kd/."""
    path = run.cfg.sft.start_from
    if path is None:
        return run.load_stage("kd")
    if not (Path(path) / "config.json").exists():
        raise MissingPathError(f"sft.start_from {path}: no model folder there (run its kd stage first)")
    return AetherisForCausalLM.from_pretrained(path, dtype=torch.float32)


def stage_sft(run: Run) -> Path:
    cfg, t = run.cfg, run.teacher
    tok = t.tokenizer
    student = sft_start(run)
    budget = cfg.train.sft
    chats = sft_chats(run)
    sampler = MixtureSampler(chats, tau=cfg.data.tau, seed=budget.seed)
    rows, skipped, wanted = [], 0, budget.steps * budget.batch_size * budget.grad_accum
    for _ in range(50 * wanted):
        if len(rows) == wanted:
            break
        ex = next(sampler)
        try:
            r = render_chat(tok, list(ex.messages), tools=list(ex.tools) if ex.tools else None,
                            max_length=cfg.sft.max_length)  # fmt: skip
        except Exception:  # a template that cannot render this chat: counted, not fatal
            skipped += 1
            continue
        if any(label != -100 for label in r["labels"]):  # else the answer was cut off by max_length
            rows.append({k: torch.tensor(v) for k, v in r.items()})
        else:
            skipped += 1
    if len(rows) < wanted:
        raise RuntimeError(
            f"sft: only {len(rows)} of {wanted} conversations fit sft.max_length={cfg.sft.max_length} "
            f"with an assistant turn left ({skipped} skipped); raise sft.max_length"
        )
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def collate(batch: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in batch)
        out = {}
        for key, fill in (("input_ids", pad), ("attention_mask", 0), ("labels", -100)):
            out[key] = torch.stack(
                [torch.nn.functional.pad(r[key], (0, width - len(r[key])), value=fill) for r in batch]
            )
        return out

    online = OnlineTeacher(t.model)
    # CE on assistant tokens (alpha = 1), plus kl_weight * KL to the teacher on the same batch.
    objective = kd_objective(cfg.kd, temperature=1.0, alpha=1.0, kl_weight=cfg.sft.kl_weight)

    def step_fn(model, batch):
        res = kd_step(model, batch, online, objective)
        return {"loss": res.loss, "ce": res.ce, "kl": res.kl}

    train(
        student,
        rows,
        step_fn,
        budget,
        run.out / "runs" / "sft",
        resume=run.resume,
        collate_fn=collate,
        stage="sft",
    )
    note = {"conversations": len(rows), "unrenderable_skipped": skipped, "region": cfg.sft.region,
            "languages": sorted({c.lang for c in chats}), "start_from": cfg.sft.start_from}  # fmt: skip
    return run.save_stage(student, "sft", note)


def write_final(run: Run, last: str) -> Path:
    """Copy the last stage to output_dir/student and write its model card."""
    src, dst = run.out / last, run.out / "student"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    notes = {
        s: json.loads((run.out / s / "stage.json").read_text())
        for s in STAGES
        if (run.out / s / "stage.json").exists()
    }
    init = notes.get("init", {}).get("init", run.cfg.student.init)  # what stage init did
    source = {"teacher": "weights from the teacher (MambaInLlama attention -> SSM, MLP -> experts)",
              "random": "random, nothing copied from the teacher (embeddings included); "
                        "the expert strategy only sets the expert width"}[init]  # fmt: skip
    card = [f"# Aetheris student of {run.cfg.teacher.name}", "",
            f"- layout: `{run.cfg.student.layout}`; experts: `{run.cfg.student.experts}`; "
            f"layer map: `{notes.get('init', {}).get('layer_map')}`",
            f"- init: `{init}`: {source}",
            f"- parameters: {notes.get('init', {}).get('parameters')} "
            f"(active per token: {notes.get('init', {}).get('active_parameters')}; teacher: "
            f"{notes.get('init', {}).get('teacher_parameters')})", ""]  # fmt: skip
    if "align" in notes:
        card += ["## Alignment (normalised MSE, before -> after)", ""]
        card += [f"- block {r['block']} <- teacher layer {r['teacher_layer']}: {r['loss_before']:.4f} -> {r['loss_after']:.4f}"
                 for r in notes["align"]["layers"]] + [""]  # fmt: skip
    if "kd" in notes:
        kd = notes["kd"]
        card += ["## KL distillation", "", f"- tokens: {kd['tokens']}; held-out KL {kd['held_out_kl_before']:.4f} -> "
                 f"{kd['held_out_kl_after']:.4f}", ""]  # fmt: skip
        if "group_dro" in kd:
            dro = kd["group_dro"]
            q = ", ".join(f"{g} {w:.3f}" for g, w in sorted(dro["q"].items(), key=lambda gw: -gw[1]))
            card[-1:-1] = [f"- group DRO over {kd['groups']} ({dro['reweight']}, eta {dro['eta']}): final q {q}"]
    if "sft" in notes:
        card += ["## SFT", "", f"- conversations: {notes['sft']['conversations']}", ""]
    card += [f"Data rows kept/skipped: {run.summary.as_dict()}", ""]
    (dst / "README.md").write_text("\n".join(card))
    return dst


# The stages in the order they run: the one list of their names.
STAGES: dict[str, Callable[[Run], Path]] = {"init": stage_init, "align": stage_align, "kd": stage_kd, "sft": stage_sft}


def run_stages(cfg: RunConfig, stage: str = "all", resume: bool = False) -> Path:
    if stage != "all" and stage not in STAGES:
        raise BadValueError(f"--stage {stage!r}: expected one of {', '.join(STAGES)} or all")
    run = Run(cfg, resume)
    todo = tuple(STAGES) if stage == "all" else (stage,)
    for name in todo:
        started = time.perf_counter()
        last = STAGES[name](run)
        logger.info("stage %s done in %.0fs -> %s", name, time.perf_counter() - started, last)
    run.summary.report()
    return write_final(run, todo[-1])
