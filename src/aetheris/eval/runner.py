"""Run tasks on models; write one results file per model (`aetheris.eval.results`).

Per-item results are cached in append-only JSONL files (one per model/task/language), flushed
after every batch: a re-run, a larger --limit or a crash resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from aetheris.eval.identity import claim_cache
from aetheris.eval.results import (
    ItemResult,
    LanguageResult,
    ModelResults,
    ResultsError,
    TaskResult,
    aggregate,
    load_results,
    save_results,
)
from aetheris.eval.tasks import Item, Task, UnknownLanguageError, get_task, resolve_language
from aetheris.progress import Bar

# Items handed to a task at once, in batches: the scorer sorts them by length inside a chunk,
# so larger chunks waste less padding; the cache is flushed after each chunk.
CHUNK_BATCHES = 8


# -- item cache ---------------------------------------------------------------------------------


class ItemCache:
    """Append-only JSONL of item results; unreadable lines (a crash mid-write) are ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Item]:
        done: dict[str, Item] = {}
        if not self.path.is_file():
            return done
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "id" in row and "score" in row:
                done[str(row["id"])] = row
        return done

    def append(self, rows: Sequence[Item]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A torn last line must not swallow the next record: start on a fresh line.
        torn = (
            self.path.is_file()
            and self.path.stat().st_size > 0
            and not self.path.read_bytes().endswith(b"\n")
        )
        with self.path.open("a", encoding="utf-8") as f:
            if torn:
                f.write("\n")
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()


# -- helpers --------------------------------------------------------------------------------------


def model_slug(model: str) -> str:
    """A file-name-safe, collision-free name for a model path or hub id."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", model.strip("/").replace("/", "__"))[-80:]
    return f"{base}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"


def claim(out_dir: Path, model: str, identity: str | None = None) -> bool:
    """False when `out_dir` held another model's scores under this path; they are removed, its
    results file too (`aetheris.eval.identity.claim_cache`)."""
    slug = model_slug(model)
    if claim_cache(Path(out_dir) / "cache" / slug, model, identity):
        return True
    (Path(out_dir) / f"{slug}.json").unlink(missing_ok=True)
    return False


def display_name(model: str) -> str:
    """What people read for a model (the teacher's name for its GGUF cache, never a hash)."""
    from aetheris.teacher.load import display_name as name_of  # one rule for every command

    return name_of(model)


def resolve_tasks(names: Sequence[str]) -> list[Task]:
    return [get_task(n.strip()) for n in names if n.strip()]


def plan_languages(
    tasks: Sequence[Task], langs: Sequence[str] | Mapping[str, Sequence[str] | None] | None
) -> dict[str, list[str]]:
    """Languages per task. Each requested code must belong to at least one selected task;
    a task runs the requested codes it covers. A mapping {task: codes} plans each task on its
    own codes (None or a missing task: all of its languages), as a study profile does."""
    if isinstance(langs, Mapping):
        return {t.name: plan_languages([t], langs.get(t.name))[t.name] for t in tasks}
    if not langs:
        return {t.name: t.languages() for t in tasks}
    plan: dict[str, list[str]] = {t.name: [] for t in tasks}
    for code in langs:
        matched, errors = False, []
        for t in tasks:
            try:
                canon = resolve_language(code, _codes(t))
            except UnknownLanguageError as e:
                errors.append(f"{t.name}: {e}")
                continue
            matched = True
            if canon not in plan[t.name]:
                plan[t.name].append(canon)
        if not matched:
            raise UnknownLanguageError("; ".join(errors))
    return plan


def _codes(task: Task) -> dict[str, str]:
    """{canonical: dataset code}; tasks may offer ``dataset_codes()`` so that a user can also
    type the dataset's own code (e.g. 'zh' for 'zh-Hans', 'swh_Latn' for 'sw')."""
    codes = task.dataset_codes() if hasattr(task, "dataset_codes") else {}
    return {lang: codes.get(lang, lang) for lang in task.languages()}


class _Rate(TextColumn):
    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # noqa: D102
        from rich.text import Text

        return Text(f"{task.speed:.2f} items/s" if task.speed else "-- items/s")


# -- running ------------------------------------------------------------------------------------


def evaluate_model(
    lm: Any,
    model: str,
    tasks: Sequence[Task],
    plan: dict[str, list[str]],
    out_dir: Path,
    data_dir: Path | None = None,
    limit: int | Mapping[str, int | None] | None = None,
    settings: dict | None = None,
    console: Console | None = None,
) -> dict:
    """Score every planned (task, language) for one loaded model; write the results file and
    return its content as JSON values, plus ``path``. `limit`: one for every task, or {task: limit}."""
    out_dir = Path(out_dir)
    work = _work(model, tasks, plan, out_dir, data_dir, limit, settings)
    total = sum(len(w[5]) for w in work)
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeRemainingColumn(),
    ]
    chunk = getattr(lm, "batch_size", 8) * CHUNK_BATCHES
    with Bar(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(display_name(model), total=total)
        for task, lang, _items, cache, done, todo in work:
            progress.update(bar, description=f"{display_name(model)} {task.name}/{lang}")
            for start in range(0, len(todo), chunk):
                rows = task.score(lm, todo[start : start + chunk])
                cache.append(rows)
                done.update({str(r["id"]): r for r in rows})
                progress.advance(bar, len(rows))
    result = _assemble(model, work)
    path = save_results(result, out_dir / f"{model_slug(model)}.json")
    return {**result.to_json(), "path": str(path)}


def _assemble(model: str, work: list[tuple]) -> ModelResults:
    """The results file's content from the scored rows of every planned (task, language)."""
    result = ModelResults(
        model=model,
        model_name=display_name(model),
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        tasks={},
    )
    for task, lang, items, _cache, done, _todo in work:
        entry = result.tasks.setdefault(
            task.name, TaskResult(metric=task.metric, higher_is_better=task.higher_is_better, languages={})
        )
        rows = [ItemResult.model_validate(done[it["id"]]) for it in items]
        entry.languages[lang] = LanguageResult(score=aggregate(rows), n=len(rows), items=rows)
    return result


def _work(model: str, tasks: Sequence[Task], plan: dict[str, list[str]], out_dir: Path, data_dir: Path | None,
          limit: int | Mapping[str, int | None] | None, settings: dict | None) -> list[tuple]:  # fmt: skip
    """(task, language, items, cache, cached rows by id, items still to score) per planned pair."""
    slug, work = model_slug(model), []
    for task in tasks:
        for lang in plan[task.name]:
            items = task.load(lang, data_dir, limit.get(task.name) if isinstance(limit, Mapping) else limit)
            cache = ItemCache(out_dir / "cache" / slug / task.name / f"{lang}-{_fingerprint(task, settings or {})}.jsonl")
            done = cache.read()
            work.append((task, lang, items, cache, done, [it for it in items if it["id"] not in done]))
    return work


def _settings(device: str, dtype: str, chat_template: bool) -> dict:
    """What an item's score depends on beyond the task: part of its cache key."""
    from aetheris.eval.lm import native_dtype

    # The dtype the items are scored in, resolved: a bf16 run must not reuse fp32 items, also when
    # `native` meant fp32 on the machine that wrote the cache and bf16 on the one reading it.
    return {"chat_template": chat_template, "dtype": native_dtype(device) if dtype == "native" else dtype}


def cached_result(
    model: str,
    task_names: Sequence[str],
    out_dir: Path,
    langs: Sequence[str] | Mapping[str, Sequence[str] | None] | None = None,
    data_dir: Path | None = None,
    limit: int | Mapping[str, int | None] | None = None,
    device: str = "cpu",
    dtype: str = "auto",
    chat_template: bool = False,
    identity: str | None = None,
) -> dict | None:
    """`run`'s result for one model from its item cache alone, without loading the model, when
    every planned item is cached; None when any item still needs scoring. `identity`: see `run`."""
    tasks = resolve_tasks(task_names)
    claim(Path(out_dir), model, identity)
    plan = plan_languages(tasks, langs)
    work = _work(model, tasks, plan, Path(out_dir), data_dir, limit, _settings(device, dtype, chat_template))
    if any(todo for *_, todo in work):
        return None
    result, path = _assemble(model, work), Path(out_dir) / f"{model_slug(model)}.json"
    try:
        written = load_results(path)
    except (OSError, ResultsError):
        written = None
    if written is None or written.tasks != result.tasks:  # else keep the file (and its date) as it is
        written = result
        save_results(result, path)
    return {**written.to_json(), "path": str(path)}


def _fingerprint(task: Task, settings: dict) -> str:
    own = {"max_new_tokens": getattr(task, "max_new_tokens", None)}
    key = json.dumps({"task": task.name, "version": task.version, **own, **settings}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def run(
    models: Sequence[str],
    task_names: Sequence[str],
    out_dir: Path,
    langs: Sequence[str] | Mapping[str, Sequence[str] | None] | None = None,
    data_dir: Path | None = None,
    limit: int | Mapping[str, int | None] | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    dtype: str = "auto",
    chat_template: bool = False,
    max_new_tokens: int | None = None,
    console: Console | None = None,
    after_eval: Callable[[str, Any], dict] | None = None,
    identities: Mapping[str, str] | None = None,
) -> list[dict]:
    """Load each model in turn and evaluate it; returns the per-model result dicts.

    `langs` and `limit` may be given per task ({task: value}). `after_eval(model, lm)` runs on
    each loaded model after its items (a study measures speed there, without a second load);
    what it returns is kept as the result's ``measured``. A model's cached items are reused only
    while its path holds the model they were scored on (`aetheris.eval.identity`); `identities`
    ({model: identity}) names it where the folder alone cannot."""
    import torch

    from aetheris.eval.lm import HFLM

    tasks = resolve_tasks(task_names)
    plan = plan_languages(tasks, langs)  # validate before loading any model
    for option, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be >= 1, got {value}")
    if max_new_tokens is not None:
        for t in tasks:
            if hasattr(t, "max_new_tokens"):
                t.max_new_tokens = max_new_tokens
    settings = _settings(device, dtype, chat_template)
    results = []
    for model in models:
        t0 = time.perf_counter()
        lm = HFLM.load(model, device=device, batch_size=batch_size, dtype=dtype, chat_template=chat_template)
        claim(Path(out_dir), model, (identities or {}).get(model))  # after the load: a bad model writes nothing
        results.append(evaluate_model(lm, model, tasks, plan, out_dir, data_dir, limit, settings, console))
        results[-1]["seconds"] = time.perf_counter() - t0
        if after_eval is not None:
            results[-1]["measured"] = after_eval(model, lm)
        del lm
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return results
