"""The teacher's top-k next-token distribution, computed once and reused across epochs and runs.

Layout of a cache folder:
  manifest.json          what the cache holds (below); written last, so a folder without it is unfinished
  shard-00000.safetensors  values [n, L, k] (fp16 or fp32), indices [n, L, k] int32, row_ids [n] int64,
                           and with `label_logprobs: true` in the manifest label_logprobs [n, L]

What is stored: **log-probabilities of the teacher's distribution softened at the manifest's
temperature**, log_softmax(logits / T), top-k by value. Raw logits would be temperature-free,
but the tail bucket of the top-k loss needs the teacher's mass outside the top-k, which top-k
raw logits alone cannot give; log-probs at T give it exactly (1 - Σ exp(values)). A run at
another temperature therefore needs another cache, and the reader refuses a mismatch.

`label_logprobs` (optional, `build_topk_cache(label_logprobs=True)`): the teacher's log-probability
at T = 1 of each position's next input token (0 at the last position, which has none). The top-k
holds it only when that token is among the k; group DRO's excess-CE signal needs it at every
position. A cache with them serves any run; a run that needs them refuses a cache without.

Entries are found by dataset row id, so a cache is only valid for the rows it was built over.
`rows_hash` (`rows_fingerprint`: the token ids and masks of every row, in row-id order) is part of
the key: several runs may share one cache folder when they train on exactly the same rows (same
data, tau, seed, sequence length and number of rows), and a run over other rows is refused
instead of being handed another text's teacher distribution.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from safetensors import safe_open
from safetensors.torch import save_file

from aetheris.errors import UserError
from aetheris.progress import Bar

MANIFEST = "manifest.json"
FORMAT = "aetheris-topk-v1"
VALUES = "log_probs_at_temperature"


class CacheMismatchError(UserError, ValueError):
    """The cache on disk was made for another teacher, k, temperature, length or tokenizer."""


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the vocabulary (token -> id) and special tokens: equal ids mean equal rows."""
    payload = {"vocab": tokenizer.get_vocab(), "special": sorted(map(str, tokenizer.all_special_tokens))}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def rows_fingerprint(rows: Iterable[dict[str, torch.Tensor]]) -> str:
    """sha256 of the rows a cache covers: each row's input_ids and attention_mask, in row-id order."""
    h = hashlib.sha256()
    for r in rows:
        for key in ("input_ids", "attention_mask"):
            h.update(key.encode())
            h.update(r[key].to(torch.int64).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _expected(
    teacher_id: str, k: int, temperature: float, seq_len: int, tokenizer_hash: str, rows_hash: str | None
) -> dict[str, Any]:
    return {
        "format": FORMAT, "values": VALUES, "teacher_id": teacher_id, "k": k,
        "temperature": float(temperature), "seq_len": seq_len, "tokenizer_hash": tokenizer_hash,
        "rows_hash": rows_hash,
    }  # fmt: skip


def _check(manifest: dict[str, Any], expected: dict[str, Any], where: Path) -> None:
    wrong = [f"{key}: cache has {manifest.get(key)!r}, run wants {value!r}"
             for key, value in expected.items() if manifest.get(key) != value]  # fmt: skip
    if wrong:
        raise CacheMismatchError(
            f"{where}: the top-k cache does not match this run ({'; '.join(wrong)}). "
            "Point kd at another cache folder, or delete this one to rebuild it."
        )


def _topk_log_probs(
    logits: torch.Tensor, k: int, temperature: float, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of log_softmax(logits / T) over the last dim, in fp32, a chunk of positions at a time."""
    flat = logits.reshape(-1, logits.shape[-1])
    parts = [F.log_softmax(flat[s : s + chunk].float() / temperature, dim=-1).topk(k, dim=-1)
             for s in range(0, flat.shape[0], chunk)]  # fmt: skip
    shape = (*logits.shape[:-1], k)
    return torch.cat([p.values for p in parts]).view(shape), torch.cat([p.indices for p in parts]).view(shape)


def _label_log_probs(logits: torch.Tensor, ids: torch.Tensor, chunk: int) -> torch.Tensor:
    """log_softmax(logits)[t, ids[t + 1]] at T = 1, per position [B, L] (0 at the last), in fp32."""
    nxt = torch.zeros_like(ids)
    nxt[:, :-1] = ids[:, 1:]
    flat, tgt = logits.reshape(-1, logits.shape[-1]), nxt.reshape(-1)
    parts = [-F.cross_entropy(flat[s : s + chunk].float(), tgt[s : s + chunk], reduction="none")
             for s in range(0, flat.shape[0], chunk)]  # fmt: skip
    out = torch.cat(parts).view(ids.shape)
    out[:, -1] = 0.0
    return out


@torch.no_grad()
def build_topk_cache(
    teacher: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    out_dir: str | Path,
    *,
    teacher_id: str,
    k: int,
    temperature: float,
    seq_len: int,
    tokenizer_hash: str,
    rows_hash: str | None = None,
    dtype: torch.dtype = torch.float16,
    total_rows: int | None = None,
    rows_per_forward: int = 1,
    positions_per_chunk: int = 512,
    label_logprobs: bool = False,
) -> Path:
    """Run the teacher over `batches` ({input_ids [B, L], attention_mask?, row_ids [B]}) and store
    its top-k log-probs, one shard per batch. A finished cache with the same manifest is reused
    as is; one for another setting raises CacheMismatchError; an unfinished one is redone.
    `rows_hash` (`rows_fingerprint` of the rows in `batches`) ties the cache to those rows.

    Memory: the teacher runs on `rows_per_forward` rows at a time (one row of 2048 positions
    over a 262k vocabulary is already 1 GiB of bf16 logits), and the fp32 softmax + top-k runs
    over `positions_per_chunk` positions at a time. `label_logprobs`: also store the teacher's
    log-probability of each next token (a finished cache without them raises CacheMismatchError)."""
    out_dir = Path(out_dir)
    expected = _expected(teacher_id, k, temperature, seq_len, tokenizer_hash, rows_hash)
    if (out_dir / MANIFEST).exists():
        manifest = json.loads((out_dir / MANIFEST).read_text())
        _check(manifest, expected, out_dir)
        if label_logprobs:
            _check_labels(manifest, out_dir)
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    teacher.eval()  # no dropout: the cache must be the teacher's distribution, reproducibly
    device = next(teacher.parameters()).device
    shards, rows_done = [], 0
    columns = (TextColumn("top-k cache"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
               TimeRemainingColumn())  # fmt: skip
    with Bar(*columns, transient=True) as bar:
        task = bar.add_task("rows", total=total_rows)
        for batch in batches:
            ids = batch["input_ids"]
            if ids.shape[1] != seq_len:
                raise ValueError(
                    f"build_topk_cache: batch has length {ids.shape[1]}, manifest seq_len is {seq_len}"
                )
            mask = batch.get("attention_mask")
            values, indices, labels = [], [], []
            for r in range(0, ids.shape[0], rows_per_forward):
                sub_ids = ids[r : r + rows_per_forward].to(device)
                sub_mask = None if mask is None else mask[r : r + rows_per_forward].to(device)
                logits = teacher(input_ids=sub_ids, attention_mask=sub_mask).logits
                v, i = _topk_log_probs(logits, k, temperature, positions_per_chunk)
                values.append(v)
                indices.append(i)
                if label_logprobs:
                    labels.append(_label_log_probs(logits, sub_ids, positions_per_chunk))
                del logits
            values, indices = torch.cat(values), torch.cat(indices)
            name = f"shard-{len(shards):05d}.safetensors"
            tensors = {
                "values": values.to(dtype).cpu().contiguous(),
                "indices": indices.to(torch.int32).cpu().contiguous(),
                "row_ids": batch["row_ids"].to(torch.int64).cpu().contiguous(),
            }
            if label_logprobs:
                tensors["label_logprobs"] = torch.cat(labels).to(dtype).cpu().contiguous()
            tmp = out_dir / f".{name}.tmp-{os.getpid()}"
            save_file(tensors, str(tmp))
            os.replace(tmp, out_dir / name)
            shards.append({"file": name, "rows": int(ids.shape[0])})
            rows_done += int(ids.shape[0])
            bar.update(task, advance=int(ids.shape[0]))
    manifest = {**expected, "dtype": str(dtype).removeprefix("torch."), "label_logprobs": label_logprobs,
                "rows": rows_done, "shards": shards}  # fmt: skip
    _atomic_write_bytes(out_dir / MANIFEST, json.dumps(manifest, indent=2).encode())
    return out_dir


def _check_labels(manifest: dict[str, Any], where: Path) -> None:
    if not manifest.get("label_logprobs", False):
        raise CacheMismatchError(
            f"{where}: the top-k cache has no label_logprobs, which kd.dro_signal: excess_ce needs. "
            "Point kd.cache_dir at another folder, or delete this one to rebuild it."
        )


class TopKCache:
    """Reads a finished cache; `lookup(row_ids)` returns the rows of a batch, in batch order, and
    `lookup_with_labels(row_ids)` their label log-probs too (`label_logprobs=True` requires the
    cache to have them)."""

    def __init__(
        self,
        path: str | Path,
        *,
        teacher_id: str,
        k: int,
        temperature: float,
        seq_len: int,
        tokenizer_hash: str,
        rows_hash: str | None = None,
        label_logprobs: bool = False,
    ) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.exists():
            raise FileNotFoundError(
                f"{self.path}: no {MANIFEST} (not a top-k cache, or its build did not finish)"
            )
        self.manifest = json.loads(manifest_path.read_text())
        _check(self.manifest, _expected(teacher_id, k, temperature, seq_len, tokenizer_hash, rows_hash), self.path)
        if label_logprobs:
            _check_labels(self.manifest, self.path)
        self.has_labels = bool(self.manifest.get("label_logprobs", False))
        self._where: dict[int, tuple[str, int]] = {}
        for shard in self.manifest["shards"]:
            with safe_open(self.path / shard["file"], framework="pt") as f:
                for pos, row in enumerate(f.get_tensor("row_ids").tolist()):
                    self._where[row] = (shard["file"], pos)

    def __len__(self) -> int:
        return len(self._where)

    def _read(self, row_ids: Iterable[int] | torch.Tensor, names: tuple[str, ...]) -> list[torch.Tensor]:
        """The tensors `names` of these dataset rows, stacked in batch order."""
        rows = row_ids.tolist() if isinstance(row_ids, torch.Tensor) else list(row_ids)
        missing = [r for r in rows if r not in self._where]
        if missing:
            raise KeyError(f"{self.path}: rows {missing[:5]} are not in the top-k cache ({len(self)} rows)")
        by_file: dict[str, list[tuple[int, int]]] = {}
        for i, r in enumerate(rows):
            file, pos = self._where[r]
            by_file.setdefault(file, []).append((i, pos))
        out: list[list[torch.Tensor] | None] = [None] * len(rows)
        for file, items in by_file.items():
            with safe_open(self.path / file, framework="pt") as f:
                slices = [f.get_slice(n) for n in names]
                for i, pos in items:
                    out[i] = [s[pos : pos + 1] for s in slices]
        return [torch.cat([o[j] for o in out]) for j in range(len(names))]

    def lookup(self, row_ids: Iterable[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs [B, L, k] float32, token ids [B, L, k] int64) for these dataset rows."""
        values, indices = self._read(row_ids, ("values", "indices"))
        return values.float(), indices.long()

    def lookup_with_labels(self, row_ids: Iterable[int] | torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`lookup`'s two tensors and the teacher's log-prob of each next token [B, L] float32, in
        one read (a cache built with label_logprobs)."""
        if not self.has_labels:
            _check_labels(self.manifest, self.path)
        values, indices, labels = self._read(row_ids, ("values", "indices", "label_logprobs"))
        return values.float(), indices.long(), labels.float()
