"""Equity-aware KD on the best student (issue 15): uniform KD against group DRO, from one aligned
student, with identical rows, seeds and budget.

Every run starts KD from the aligned student that bench_hybrid.py built for `--student`
(runs/hybrid/<student>/align; build it first with
`python bench_hybrid.py --students full-50p-upcycle --distil-only --keep-weights`). KD reads
SIB-200 `train` (701 sentences in each of 69 languages; the study scores `test`) packed into
128-token rows of one language each (`data.pack: language`): group DRO weights rows by their group, and the embedded
corpus's short paragraphs packed as a mixture make rows of 12.6 languages, 5% of whose tokens are in
the row's tagged language (BENCHMARKS §13). Held-out KL per family is measured on rows of SIB-200
`dev`. Only the KD weighting and the seed change between runs:

    uniform-s0, uniform-s1            uniform KD on seed 0's and seed 1's rows
    dro-loss-s0                       group DRO over families, q weighting each family's mean KL (Sagawa et al.)
    dro-sampling-s0                   group DRO, q drawing the family of each row (the same rows, spent differently)
    dro-loss-s1, dro-sampling-s1      the same at seed 1

A DRO run at another `--eta` than the default 0.1 is its own run, named with it (`dro-loss-s0-eta1`,
`dro-loss-s0-eta0`: η 0 keeps q uniform over families, the group-balanced point of the η curve).
`--signal excess_ce` weights families by their excess CE over the teacher in bits per byte (what a
FLORES drop is) instead of their KL; its runs are named `dro-loss-s0-excess` and read a cache with
the teacher's label log-probs (`topk-seed0-labels`). `--prior data` starts q at each family's share
of the rows instead of 1/13 (`kd.dro_prior`; runs named `dro-sampling-s0-excess-data-eta0.2`), so
that η 0 is uniform KD and η tilts it.

Runs of one seed share one top-k cache. For every run, and for bench_hybrid's own KD student (the
study's kd-student: embedded corpus, mixed rows), it measures held-out KL and excess CE (bits per
byte) per family on one common set of held-out rows (`--remeasure` adds the excess CE to records
written before it was measured), and writes `results/group_dro/<run>.json` and, for DRO runs, `q-<run>.png`
(q over training, one line per family). Runs live under runs/hybrid/dro-language/. It resumes: a
run with a result is skipped, a killed run resumes from its checkpoints.

    python benchmarks/bench_group_dro.py [--runs uniform-s0 dro-loss-s0 dro-sampling-s0 uniform-s1] [--eta 0.1]
                                         [--signal kl|excess_ce] [--remeasure]

The students are rows of configs/study-gemma3-270m.yaml (`aetheris study` scores them with
intervals; BENCHMARKS §13 has the figures).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from common import machine, write_json
from hybrid_placement import config_dict, teacher_n_layers
from plot_group_weights import read_records

from aetheris.distill.config import RunConfig, parse_config
from aetheris.distill.group_dro import group_of, target_bytes
from aetheris.distill.kd import OnlineTeacher, held_out_row_sums, kd_objective
from aetheris.distill.pipeline import Run, kl_by_group, stage_kd
from aetheris.model import AetherisForCausalLM
from aetheris.precision import cpu_summary
from aetheris.report.plots import group_weights

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ETA = 0.1
DEFAULT_KD_TOKENS = 40_960  # bench_hybrid's budget (BENCHMARKS §10); another budget names its runs
RESULTS = ROOT / "benchmarks" / "results" / "group_dro"
# KD data of every run: rows of one language (a row's group is then its tokens' group), from SIB-200
# sentences that the study never scores (it scores `test`). 128-token rows, 8 per step: bench_hybrid's
# 1,024 tokens per step, but 320 rows over the budget instead of 80, so that nearly every language
# has a row (80 rows of one language each leave ~21 of the 69 unseen: BENCHMARKS §13b).
# bos false: the series of BENCHMARKS §13 ran on rows without the teacher's BOS (§14); `--bos` starts a
# series with it (runs named -bos), since rows without it halve gemma3-270m's quality as a teacher.
DATA = {"train": ["sib200:train"], "eval": ["sib200:dev"], "pack": "language", "seq_len": 128, "bos": "false"}
ROWS_PER_STEP = 8
RUNS_DIR = "dro-language"  # under bench_hybrid's --runs
RUNS: dict[str, tuple[dict[str, Any], int]] = {  # name: (kd section changes, seed)
    "uniform-s0": ({"weighting": "uniform"}, 0),
    "uniform-s1": ({"weighting": "uniform"}, 1),
    "dro-loss-s0": ({"weighting": "group_dro", "reweight": "loss"}, 0),
    "dro-sampling-s0": ({"weighting": "group_dro", "reweight": "sampling"}, 0),
    "dro-loss-s1": ({"weighting": "group_dro", "reweight": "loss"}, 1),
    "dro-sampling-s1": ({"weighting": "group_dro", "reweight": "sampling"}, 1),
}


def budget_tag(kd_tokens: int) -> str:
    """'' at the default budget, else '-200k' (204,800 tokens) or '-128t'."""
    if kd_tokens == DEFAULT_KD_TOKENS:
        return ""
    return f"-{kd_tokens // 1024}k" if kd_tokens % 1024 == 0 else f"-{kd_tokens}t"


def run_name(name: str, eta: float, signal: str = "kl", kd_tokens: int | None = None, bos: bool = False,
             prior: str = "uniform") -> str:  # fmt: skip
    """`name`, tagged with the excess-CE signal, the data prior and η when a DRO run uses other
    than the defaults (uniform runs have none), with the budget when it is not the default, and
    `-bos` for rows that start with the teacher's BOS."""
    tag = budget_tag(DEFAULT_KD_TOKENS if kd_tokens is None else kd_tokens) + ("-bos" if bos else "")
    if RUNS[name][0]["weighting"] == "uniform":
        return name + tag
    name = f"{name}-excess" if signal == "excess_ce" else name
    name = f"{name}-data" if prior == "data" else name
    return (name if eta == DEFAULT_ETA else f"{name}-eta{eta:g}") + tag


def dro_config(base: dict, student: str, name: str, n_layers: int, kd_tokens: int, runs: Path,
               dro: dict[str, Any], bos: bool = False) -> RunConfig:  # fmt: skip
    """bench_hybrid's config for `student` with the runs' KD data (`DATA`), run `name`'s KD
    weighting and seed, its own output folder (tagged with η), and the seed's shared top-k cache."""
    changes, seed = RUNS[name]
    base = json.loads(json.dumps(base))
    base["data"].update(data_for(bos))
    base["train"]["kd"]["batch_size"] = ROWS_PER_STEP
    cfg = config_dict(base, student, n_layers, kd_tokens, runs / RUNS_DIR)
    signal = dro.get("dro_signal", "kl")
    prior = dro.get("dro_prior", "uniform")
    cfg["output_dir"] = str(runs / RUNS_DIR / run_name(name, dro["dro_eta"], signal, kd_tokens, bos, prior))
    cfg["kd"].update(changes)
    labels = ""
    if changes["weighting"] == "group_dro":
        cfg["kd"].update({"groups": "family", **dro})
        labels = "-labels" if signal == "excess_ce" else ""  # a cache with the teacher's label log-probs
    # a cache holds one set of rows: a seed's runs share it, at one budget
    rows = budget_tag(kd_tokens) + ("-bos" if bos else "")
    cfg["kd"]["cache_dir"] = str(runs / RUNS_DIR / f"topk-seed{seed}{labels}{rows}")
    cfg["train"]["kd"].update(seed=seed, log_every=1)
    return parse_config(cfg, f"{name} (from the base config)")


def q_mean(records: list[dict[str, Any]], q0: dict[str, float]) -> dict[str, float]:
    """Each group's q averaged over the steps: the share of the rows it drew (`sampling`) or of the
    loss (`loss`). Step 1 uses `q0` (the KD stage note's), step t the q logged after step t - 1,
    so this needs every step logged (bench_group_dro's log_every 1)."""
    steps = [r["step"] for r in records]
    if steps != list(range(1, len(steps) + 1)):
        raise ValueError(f"q_mean: expected every step logged, got steps {steps[:5]}...")
    used = [q0] + [{g: r[f"q/{g}"] for g in q0} for r in records[:-1]]
    return {g: statistics.fmean(q[g] for q in used) for g in sorted(q0)}


def first_q(stage: dict[str, Any]) -> dict[str, float]:
    """The q a DRO run's first step used: its stage note's `q0`; notes written before it was
    recorded are of uniform-prior runs, whose q0 is 1/G."""
    dro = stage["group_dro"]
    if "q0" in dro:
        return dro["q0"]
    if dro.get("prior", "uniform") != "uniform":
        raise ValueError(f"a {dro['prior']}-prior run's stage note has no q0")
    return {g: 1.0 / len(dro["q"]) for g in dro["q"]}


def add_q_mean(path: Path) -> None:
    """Adds `q_mean` to a finished DRO record that lacks it, while its run's metrics exist."""
    record = json.loads(path.read_text())
    metrics = Path(record["folder"]).parent / "runs" / "kd" / "metrics.jsonl"
    if record.get("weighting") == "group_dro" and "q_mean" not in record and metrics.exists():
        write_json(path, {**record, "q_mean": q_mean(read_records(metrics), first_q(record["stage"]))})
        print(f"{path.stem}: q_mean added", flush=True)


def data_for(bos: bool) -> dict[str, Any]:
    """The runs' data section: `DATA`, with the tokenizer's BOS at the start of rows when `bos`."""
    return {**DATA, "bos": "auto"} if bos else dict(DATA)


def start_from_align(cfg: RunConfig, align: Path) -> None:
    """The run's `align` stage is the student's own (a link: GBs at full depth, read only)."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    link = out / "align"
    if not link.exists():
        link.symlink_to(align.resolve(), target_is_directory=True)


def family_kl(run: Run, student_dir: Path, rows: list[dict[str, Any]], langs: list[str]) -> dict[str, Any]:
    """Held-out KL per counted token and excess CE over the teacher in bits per UTF-8 byte (the
    unit of a FLORES drop), overall and per family, of the student in `student_dir`."""
    student = AetherisForCausalLM.from_pretrained(student_dir, dtype=torch.float32)
    objective = dataclasses.replace(kd_objective(run.cfg.kd), teacher_ce=True)
    sums = held_out_row_sums(student, rows, OnlineTeacher(run.teacher.model), objective,
                              progress=f"held-out KL {student_dir.parent.name}")
    excess = (sums["ce"] - sums["teacher_ce"]) / math.log(2)
    n_bytes = torch.cat([target_bytes({k: r[k][None] for k in ("input_ids", "attention_mask", "labels")},
                                      run.teacher.tokenizer) for r in rows])  # fmt: skip
    families = [group_of(lang, "family") for lang in langs]
    by, by_excess = kl_by_group(sums["kl"], sums["tokens"], families), kl_by_group(excess, n_bytes, families)
    return {"kl": float(sums["kl"].sum()) / max(int(sums["tokens"].sum()), 1),
            "excess_bits_per_byte": float(excess.sum()) / max(int(n_bytes.sum()), 1),
            "by_family": {f: {"kl": by[f], "excess_bits_per_byte": by_excess[f], "rows": families.count(f)}
                          for f in by}}  # fmt: skip


def held_out(run: Run, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    """`n` held-out rows (SIB-200 dev, never trained on), one language each, the same for every run,
    and each row's language."""
    rows = run.packed(run.cfg.data.eval, n, seed=12345, held_out=True, keep_lang=True)
    return rows, [r.pop("lang") for r in rows]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "hybrid-gemma3-270m.yaml")
    ap.add_argument("--student", default="full-50p-upcycle", help="bench_hybrid's student whose align KD starts from")
    ap.add_argument("--runs", nargs="+", choices=list(RUNS),
                    default=["uniform-s0", "dro-loss-s0", "dro-sampling-s0", "uniform-s1"])
    ap.add_argument("--kd-tokens", type=int, default=None,
                    help=f"KD tokens per run (default {DEFAULT_KD_TOKENS:,}, bench_hybrid's; another names its runs)")
    ap.add_argument("--eta", type=float, default=DEFAULT_ETA, help="kd.dro_eta: q_g *= exp(eta * L_g) per step")
    ap.add_argument("--floor", type=float, default=0.1, help="kd.dro_floor, as a fraction of 1/G")
    ap.add_argument("--smoothing", type=float, default=0.5, help="kd.dro_smoothing: 2-row batches see few families")
    ap.add_argument("--prior", choices=["uniform", "data"], default="uniform",
                    help="kd.dro_prior: q starts uniform over families, or at their shares of the rows")
    ap.add_argument("--signal", choices=["kl", "excess_ce"], default="kl",
                    help="kd.dro_signal: each family's KL, or its excess CE in bits per byte")
    ap.add_argument("--bos", action="store_true",
                    help="rows (KD and held-out) start with the teacher's BOS; runs named -bos")
    ap.add_argument("--remeasure", action="store_true",
                    help="measure the held-out excess CE of finished records that lack it")
    ap.add_argument("--held-out-rows", type=int, default=256, help="common held-out rows for KL per family")
    ap.add_argument("--root", type=Path, default=ROOT / "runs" / "hybrid", help="bench_hybrid's --runs")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    args.kd_tokens = DEFAULT_KD_TOKENS if args.kd_tokens is None else args.kd_tokens
    args.results.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    student_dir = args.root / args.student
    align = student_dir / "align"
    if not (align / "config.json").exists():
        sys.exit(f"{align}: no aligned student; build it with bench_hybrid.py --students {args.student} "
                 "--distil-only --keep-weights")  # fmt: skip
    n_layers = teacher_n_layers(base["teacher"]["name"])
    dro = {"dro_eta": args.eta, "dro_floor": args.floor, "dro_smoothing": args.smoothing, "dro_signal": args.signal,
           "dro_prior": args.prior}  # fmt: skip
    header = {"machine": machine(), "cpu": cpu_summary(), "date": datetime.date.today().isoformat(),
              "command": " ".join(sys.argv), "kd_tokens": args.kd_tokens, "student": args.student}  # fmt: skip
    print(header["machine"], "|", header["cpu"], flush=True)
    measure = None  # a Run (teacher, held-out rows) for the KL per family, made when first needed

    def measured(folder: Path) -> dict[str, Any]:
        nonlocal measure
        if measure is None:
            run = Run(dro_config(base, args.student, "uniform-s0", n_layers, args.kd_tokens, args.root, dro, args.bos))
            measure = (run, *held_out(run, args.held_out_rows))
        run, rows, langs = measure
        return family_kl(run, folder, rows, langs)

    def remeasured(path: Path) -> None:
        record = json.loads(path.read_text())
        if args.remeasure and "excess_bits_per_byte" not in record["held_out"]:
            write_json(path, {**record, "held_out": measured(Path(record["folder"]))})
            print(f"{path.stem}: remeasured", flush=True)

    # bench_hybrid's KD (the embedded corpus in mixed rows), measured on this series' held-out rows
    own = args.results / ("kd-student-bos.json" if args.bos else "kd-student.json")
    if own.exists():
        remeasured(own)
    elif (student_dir / "kd" / "config.json").exists():
        note = json.loads((student_dir / "kd" / "stage.json").read_text())
        write_json(own, {**header, "name": own.stem, "folder": str(student_dir / "kd"), "seed": 0,
                         "weighting": "uniform", "data": "embedded corpus, mixed rows", "stage": note,
                         "held_out": measured(student_dir / "kd")})  # fmt: skip
    for base_name in args.runs:
        name = run_name(base_name, args.eta, args.signal, args.kd_tokens, args.bos, args.prior)
        path = args.results / f"{name}.json"
        if path.exists():
            print(f"{name}: done", flush=True)
            remeasured(path)
            add_q_mean(path)
            continue
        cfg = dro_config(base, args.student, base_name, n_layers, args.kd_tokens, args.root, dro, args.bos)
        out = Path(cfg.output_dir)
        start_from_align(cfg, align)
        if not (out / "kd" / "config.json").exists():
            stage_kd(Run(cfg, resume=(out / "runs" / "kd").exists()))
        record = {**header, "name": name, "folder": str(out / "kd"), "seed": RUNS[base_name][1],
                  "weighting": cfg.kd.weighting, "reweight": cfg.kd.reweight, "dro": dro, "data": data_for(args.bos), "rows_per_step": ROWS_PER_STEP,
                  "stage": json.loads((out / "kd" / "stage.json").read_text()),
                  "held_out": measured(out / "kd")}  # fmt: skip
        if cfg.kd.weighting == "group_dro":
            records = read_records(out / "runs" / "kd" / "metrics.jsonl")
            title = f"group DRO q over KD ({name}, eta {args.eta}, {args.signal})"
            (args.results / f"q-{name}.png").write_bytes(group_weights(records, title))
            record["q_mean"] = q_mean(records, first_q(record["stage"]))
        write_json(path, record)
        print(f"{name}: held-out KL {record['held_out']['kl']:.3f}", flush=True)


if __name__ == "__main__":
    main()
