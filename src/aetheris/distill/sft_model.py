"""SFT any Hugging Face causal LM folder (or embedded teacher) on chats and tool calls: a recipe.

The pipeline's `sft` stage fine-tunes a *student* after KD (with an optional KL to the teacher).
This recipe runs the same SFT component on any loadable model, e.g. a base teacher, to measure
what SFT alone does (issue 16: does SFT restore tool calling?):

    python -m aetheris.distill.sft_model configs/sft-tools-gemma3-270m.yaml

Chats come from the same sources as `sft.data` (`embedded:tools`, `embedded:chat`, files);
each is rendered once with the tokenizer's chat template (the fallback one for base models, saved
with the model so that evaluation sees the format it was trained on), labelled on assistant
tokens only (`aetheris.data.chat.render_chat`), and trained by the one loop in `trainer.py`
(checkpoints, resume, bf16 autocast). The head runs only where a label is: in a tool chat the
answer is ~10% of the tokens, and a 262k-vocabulary head over the rest would cost as much as the
whole body.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationError

from aetheris.config_file import read_yaml_mapping
from aetheris.data.chat import IGNORE, ensure_chat_template, render_chat
from aetheris.data.sources import Example, LoadSummary, embedded_corpus, read_sources
from aetheris.distill.config import (
    DTYPES,
    EMBEDDED_CHATS,
    ConfigError,
    LanguageSelection,
    TrainConfig,
    _format,
)
from aetheris.distill.trainer import train
from aetheris.errors import BadValueError

logger = logging.getLogger(__name__)


class SFTModelConfig(LanguageSelection):
    """`region` / `languages` keep the chats to one Tiny Aya region's languages (or a list), as
    `sft.region` does in the pipeline."""

    model: str = Field(min_length=1, description="embedded teacher name, model folder, .gguf or hub id")
    dtype: str = Field("float32", description="weights' dtype while training (bf16 autocast: train.bf16)")
    data: list[str] = Field(default_factory=lambda: ["embedded:tools"], min_length=1,
                            description="chat sources, as sft.data")  # fmt: skip
    max_length: int = Field(1024, gt=0, description="tokens per conversation (tool definitions included)")
    freeze_embeddings: bool = Field(
        True, description="keep the (tied) embedding/head fixed: most of a small model's parameters")
    train: TrainConfig
    output_dir: Path


def load_sft_config(path: str | Path) -> SFTModelConfig:
    path = Path(path)
    data = read_yaml_mapping(path, ConfigError)
    try:
        cfg = SFTModelConfig.model_validate(data)
    except ValidationError as exc:
        lines = _format(exc.errors())
        raise ConfigError(f"{path}: {len(lines)} problem(s)\n  " + "\n  ".join(lines)) from None
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"{path}: dtype: expected one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    bad = [s for s in cfg.data if s.startswith("embedded") and s not in EMBEDDED_CHATS]
    if bad:
        raise ConfigError(f"{path}: data: unknown built-in chat source(s) {bad}; built in: {', '.join(EMBEDDED_CHATS)}")
    return cfg


def chats(specs: list[str], summary: LoadSummary | None = None) -> list[Example]:
    from aetheris.distill.pipeline import _tool_chats  # the pipeline's own answer format

    summary = summary if summary is not None else LoadSummary()
    out: list[Example] = []
    for spec in specs:
        if spec == "embedded:tools":
            out += _tool_chats()
        elif spec == "embedded:chat":
            out += embedded_corpus("chat", summary)
        else:
            out += [e for e in read_sources([spec], summary) if e.messages]
    if not out:
        raise BadValueError(f"data: no usable chats in {specs} (skipped: {summary.as_dict()})")
    return out


def render_rows(tokenizer: Any, examples: list[Example], max_length: int) -> tuple[list[dict], int]:
    """Rendered, labelled chats; those whose answer max_length cuts off entirely are dropped."""
    rows, skipped = [], 0
    for ex in examples:
        r = render_chat(tokenizer, list(ex.messages), tools=list(ex.tools) if ex.tools else None,
                        max_length=max_length)  # fmt: skip
        if all(label == IGNORE for label in r["labels"]):
            skipped += 1
            continue
        rows.append({k: torch.tensor(v) for k, v in r.items()})
    return rows, skipped


def collate(pad_id: int):
    def _collate(batch: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in batch)
        return {
            key: torch.stack([F.pad(r[key], (0, width - len(r[key])), value=fill) for r in batch])
            for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("labels", IGNORE))
        }

    return _collate


def assistant_ce(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mean next-token CE over labelled tokens, with logits computed only where a label follows."""
    labels = batch["labels"]
    targets = labels[:, 1:]
    keep = (targets != IGNORE).any(0).nonzero().flatten()  # positions whose next token is labelled
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    logits = out.logits.float()
    loss = F.cross_entropy(logits.flatten(0, 1), targets[:, keep].flatten(), ignore_index=IGNORE)
    # An Aetheris student in training mode also returns its routers' load-balancing and z-losses.
    router = getattr(out, "router_loss", None)
    return {"loss": loss if router is None else loss + router}


def _trainable(model: torch.nn.Module, freeze_embeddings: bool) -> list[torch.nn.Parameter]:
    frozen = {id(model.get_input_embeddings().weight)} if freeze_embeddings else set()
    if freeze_embeddings and model.get_output_embeddings() is not None:
        frozen.add(id(model.get_output_embeddings().weight))
    return [p for p in model.parameters() if id(p) not in frozen]


def run_sft(cfg: SFTModelConfig, resume: bool = False) -> Path:
    """Fine-tune cfg.model; write cfg.output_dir/model (weights, tokenizer with its template, sft.json)."""
    from aetheris.teacher.load import load_teacher

    started = time.perf_counter()
    loaded = load_teacher(cfg.model, dtype=cfg.dtype)
    model, tok = loaded.model, loaded.tokenizer
    if tok is None:
        raise BadValueError(f"model {cfg.model!r} has no tokenizer: SFT needs one")
    if ensure_chat_template(tok):
        logger.warning("%s has no chat template: using aetheris.data.chat.FALLBACK_CHAT_TEMPLATE", cfg.model)
    summary = LoadSummary()
    rows, skipped = render_rows(tok, cfg.keep(chats(cfg.data, summary), "sft-model"), cfg.max_length)
    if not rows:
        raise BadValueError(f"sft: no chat keeps an assistant token within max_length={cfg.max_length}")
    model.train()
    pad = next((i for i in (tok.pad_token_id, tok.eos_token_id) if i is not None), 0)
    result = train(model, rows, assistant_ce, cfg.train, cfg.output_dir / "run", resume=resume,
                   collate_fn=collate(pad), parameters=_trainable(model, cfg.freeze_embeddings),
                   stage="sft")  # fmt: skip
    samples = cfg.train.steps * cfg.train.batch_size * cfg.train.grad_accum
    note = {"model": cfg.model, "region": cfg.region, "languages": cfg.languages, "conversations": len(rows),
            "too_long_skipped": skipped,
            "optimizer_steps": result.step, "samples": samples, "epochs": samples / len(rows),
            "seconds": time.perf_counter() - started, "config": cfg.model_dump(mode="json")}  # fmt: skip
    return _save(model.eval(), tok, cfg.output_dir / "model", note)


def _save(model: torch.nn.Module, tok: Any, final: Path, note: dict[str, Any]) -> Path:
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "sft.json").write_text(json.dumps(note, indent=1), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        raise SystemExit("usage: python -m aetheris.distill.sft_model CONFIG.yaml [--resume]")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(run_sft(load_sft_config(args[0]), resume="--resume" in args[1:]))


if __name__ == "__main__":
    main()
