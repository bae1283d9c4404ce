"""The study recipe: check the config, build what is missing, evaluate every row with the
harness (per-item cache: a killed run resumes), measure speed on the loaded model, write the report.

    <out>/models/<name>/          compressed rows (HF folders + compression.json)
    <results>/eval/               the harness's results files and item cache
    <results>/facts/<name>.json   size and speed per row, with the machine they were measured on
    <results>/report/             report.md (+ figures/), report.html, results.json

`results` is the config's `results` folder, else `out` (and `out` when one is given on the
command line, so `-o` moves the whole study).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from aetheris.study.build import Row, build_row, plan_rows
from aetheris.study.config import StudyConfig
from aetheris.study.speed import machine, measure_speed, size_facts

log = logging.getLogger(__name__)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class _Facts:
    """`after_eval` of the harness: size and speed of each loaded model, cached per row. A row
    measured on this machine with the same source, dtype and speed settings is not re-timed."""

    def __init__(self, cfg: StudyConfig, out: Path, rows: list[Row]) -> None:
        self.cfg, self.out = cfg, out
        self.by_source = {r.source: r for r in rows}
        self.machine = machine()

    def key(self, row: Row) -> dict:
        return {"source": row.source, "dtype": self.cfg.dtype, "machine": self.machine,
                "speed": self.cfg.speed.model_dump()}  # fmt: skip

    def path(self, row: Row) -> Path:
        return self.out / "facts" / f"{row.name}.json"

    def read(self, row: Row) -> dict | None:
        """The row's facts as written, on whichever machine measured them."""
        try:
            return json.loads(self.path(row).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def cached(self, row: Row) -> dict | None:
        data = self.read(row)
        return data if data is not None and data.get("key") == self.key(row) else None

    def __call__(self, source: str, lm: Any) -> dict:
        row = self.by_source[source]
        if (hit := self.cached(row)) is not None:
            return hit
        facts = {**size_facts(lm.model, source), **measure_speed(lm.model, self.cfg.speed, lm.pad_id)}
        # Other work on the machine slows the timings: keep the 1-minute load so a reader can tell.
        facts["load_average_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        data = {"key": self.key(row), **facts}
        _write_json(self.path(row), data)
        log.info("%s: prefill %.1f tok/s, decode %.1f tok/s", row.name, facts["prefill_tokens_per_s"],
                 facts["decode_tokens_per_s"])
        return data


def run_study(cfg: StudyConfig, out: Path | None = None, data_dir: Path | None = None,
              scored_only: bool = False, only: list[str] | None = None) -> Path:  # fmt: skip
    """Run the whole study; returns the report folder. `scored_only`: build and score nothing,
    report the rows a (stopped) study has finished and list the others as not scored yet.
    `only`: build and score just these rows (and the teacher); the others are reported as
    `scored_only` reports them, so a session can add its rows without rebuilding stale ones."""
    from aetheris.paths import shared_data_dir

    results_dir = Path(cfg.results) if out is None and cfg.results else Path(out or cfg.out)
    out = Path(out or cfg.out)
    data_dir = Path(data_dir) if data_dir else shared_data_dir()
    start = time.perf_counter()
    rows = plan_rows(cfg, out)
    selected = _selected(cfg, rows, only)
    for r in rows:
        if r.missing:
            log.warning("%s: not evaluated here: %s; reported from its scores if a study wrote them", r.name,
                        r.missing)  # fmt: skip
    facts = _Facts(cfg, results_dir, rows)
    # Rows that cannot be built or scored here (folders not on this machine) are reported from their scores.
    picked = [] if scored_only else [r for r in rows if r.name in selected and not r.missing]
    names = {r.name for r in picked}
    done, machines = _finished_rows([r for r in rows if r.name not in names], results_dir, facts)
    if not scored_only:
        done |= _score_rows(cfg, picked, results_dir, data_dir, facts)
        machines.add(facts.machine)
    report = _report(cfg, rows, done, results_dir / "report", data_dir, "; ".join(sorted(machines)))
    log.info("study %s: %d models in %.0fs; report in %s", cfg.name, len(done), time.perf_counter() - start,
             report)
    return report


def _selected(cfg: StudyConfig, rows: list[Row], only: list[str] | None) -> set[str]:
    """The names of the rows to build and score: all, or `only` and the teacher (the reference
    every drop is taken against). An unknown name is an error that lists the study's rows."""
    names = [r.name for r in rows]
    if not only:
        return set(names)
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ValueError(f"--only: no row named {', '.join(unknown)} in study {cfg.name} (rows: {', '.join(names)})")
    picked = {names[0], *only}
    for name in only:  # a composition needs its base built first
        while (entry := cfg.entry(name)) is not None and entry.of is not None:
            name = entry.of
            picked.add(name)
    return picked


def _score_rows(cfg: StudyConfig, rows: list[Row], results_dir: Path, data_dir: Path,
                facts: _Facts) -> dict[str, dict]:  # fmt: skip
    """{row name: the harness's result} for every row (each present here), built and scored one at
    a time so that a stopped study keeps whole rows."""
    from aetheris.eval.identity import spec_identity
    from aetheris.eval.runner import cached_result, claim, run

    done = {}
    for row in rows:
        # A compressed row is the spec it is built to, whatever its folder holds now; the scores
        # and timings of another model under its path are dropped.
        identity = spec_identity(row.key) if row.key else None
        if not claim(results_dir / "eval", row.source, identity):
            facts.path(row).unlink(missing_ok=True)
        # Scored and timed on this machine already (a later session): nothing to build or load.
        measured = facts.cached(row)
        if measured is not None:
            res = cached_result(row.source, list(cfg.limits()), results_dir / "eval", langs=cfg.languages(),
                                data_dir=data_dir, limit=cfg.limits(), device=cfg.device, dtype=cfg.dtype,
                                identity=identity)  # fmt: skip
            if res is not None:
                done[row.name] = {**res, "measured": measured}
                continue
        build_row(cfg, rows, row.name)
        (done[row.name],) = run([row.source], list(cfg.limits()), results_dir / "eval", langs=cfg.languages(),
                                data_dir=data_dir, limit=cfg.limits(), batch_size=cfg.batch_size,
                                device=cfg.device, dtype=cfg.dtype, after_eval=facts,
                                identities={row.source: identity} if identity else None)  # fmt: skip
    return done


def _finished_rows(rows: list[Row], results_dir: Path, facts: _Facts) -> tuple[dict[str, dict], set[str]]:
    """The rows whose results file and speed facts a study already wrote (on any machine, whether
    or not their folder is here), and the machines their speeds were measured on. The others, and
    rows whose scores are another model's (a compressed row respecified since), are marked as not
    scored yet."""
    from aetheris.eval.identity import holds, spec_identity
    from aetheris.eval.runner import model_slug

    done, machines = {}, set()
    for row in rows:
        slug = model_slug(row.source)
        path = results_dir / "eval" / f"{slug}.json"
        measured = facts.read(row)
        current = holds(results_dir / "eval" / "cache" / slug, row.source,
                        spec_identity(row.key) if row.key else None)  # fmt: skip
        if path.is_file() and measured is not None and current:
            done[row.name] = {"path": str(path), "measured": measured}
            machines.add(measured.get("key", {}).get("machine", "unknown machine"))
        else:
            row.missing = row.missing or "not scored yet"
    return done, machines


def _report(cfg: StudyConfig, rows: list[Row], done: dict[str, dict], report: Path, data_dir: Path,
            machine: str) -> Path:  # fmt: skip
    from aetheris.eval.results import load_results
    from aetheris.report import build_report
    from aetheris.report.build import ModelFacts

    named, model_facts = [], []
    for row in rows:
        if row.name not in done:
            model_facts.append(ModelFacts(name=row.name, method=row.method, spec=row.spec, missing=row.missing))
            continue
        res = done[row.name]
        named.append(load_results(res["path"]).model_copy(update={"model_name": row.name}))
        measured = {k: v for k, v in res["measured"].items() if k in ModelFacts.model_fields}
        model_facts.append(ModelFacts(name=row.name, method=row.method, spec=row.spec, source=row.source,
                                      **measured))  # fmt: skip
    if rows[0].name not in done:
        raise ValueError(f"study {cfg.name}: the teacher has not been scored yet; nothing to compare")
    if len(named) < 2:
        raise ValueError(f"study {cfg.name}: only the teacher could be evaluated; nothing to compare")
    build_report(named, report, tokenizers=_teacher_tokenizer(cfg), data_dir=data_dir,
                 n_boot=cfg.n_boot, n_perm=cfg.n_perm, seed=cfg.seed, models=model_facts,
                 machine=machine, pairs=[(p.a, p.b) for p in cfg.compare],
                 title=f"Aetheris study {cfg.name} (profile {cfg.profile})")  # fmt: skip
    return report


def _teacher_tokenizer(cfg: StudyConfig) -> dict:
    """The teacher's tokenizer, for the fertility of each language (the drop-vs-fertility plot)."""
    from transformers import AutoTokenizer

    from aetheris.teacher.load import display_name, model_location

    return {display_name(cfg.teacher.model): AutoTokenizer.from_pretrained(model_location(cfg.teacher.model))}
