"""Tiny Aya's region recipe and Aya Expanse's merging, measured on CPU (issue 16 §1-2).

From one base model (default the embedded gemma3-270m, a base model as Tiny Aya's own starting
point was; or a distilled student's folder):

1. `global`: SFT on every language's chats and tool-calling training items (embedded:chat +
   embedded:tools, 998 conversations in 70 languages), `--passes` passes over them;
2. `region-<r>`: one SFT per Tiny Aya region, from the same base, on that region's conversations
   only (`region:` of the SFT recipe), the same number of passes over its own conversations;
3. `linear-<r>`: each region model merged with the global one, weights 0.5/0.5 (Tiny Aya); for
   `--extra-region` also `slerp-<r>` (t 0.5 from the global model) and `ties-<r>` (task vectors
   of both from the base, density 0.5), the other methods Aya Expanse compared;
4. every model (base, global, regions, merges) scored on tool calling (the held-out eval split,
   `--tools-ids` templates: two per category) and FLORES bits/byte (SIB-200 test, `--flores-limit`
   sentences), in `--langs-per-region` languages of every region;
5. each model against the global one: the drop per region with a 95% bootstrap interval
   (`aetheris.equity.compare` at level `region`, the global model as the reference; positive =
   worse than the global model), so a region model's own-region cell answers "does it beat the
   global model on its region", and its other cells "what does it cost elsewhere". The base's row
   against the global one is issue 16 §1: what SFT did to tool calling, per category.

Every step is skipped when its output exists; a killed SFT resumes from its checkpoints and a
killed evaluation from its item cache. Weights live under `--root`; the small results
(`results/region_merge/`: evals/<model>.json, sft.json, summary.json, summary.md, one plot per
task) are what to commit.

    python benchmarks/bench_region_merge.py [--base gemma3-270m] [--passes 1] [--langs-per-region 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

from bench_sft_tools import IDS, summary
from common import machine, table, write_json

from aetheris import languages
from aetheris.data.chat import ensure_chat_template
from aetheris.distill.config import SFT_REGIONS, LanguageSelection, TrainConfig
from aetheris.distill.sft_model import SFTModelConfig, chats, run_sft
from aetheris.equity import EquityReport, compare
from aetheris.eval.lm import HFLM
from aetheris.eval.runner import evaluate_model, plan_languages
from aetheris.eval.tasks import get_task
from aetheris.eval.tasks.tools import ToolsTask
from aetheris.merge.config import parse_merge_config
from aetheris.merge.run import merge
from aetheris.paths import shared_data_dir
from aetheris.precision import cpu_summary
from aetheris.report.plots import family_drops

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "region_merge"
DATA = ["embedded:chat", "embedded:tools"]
TASKS = ("tools", "flores_bpb")
GLOBAL = "global"


def slug(region: str) -> str:
    return region.lower().replace(" ", "-")


def eval_languages(per_region: int) -> dict[str, list[str]]:
    """The first `per_region` Tiny Aya languages of each region (registry order) that both tasks cover."""
    covered = set(get_task("flores_bpb").languages()) & set(get_task("tools").languages())
    out: dict[str, list[str]] = {}
    for lang in languages.tiny_aya():
        if lang.region in SFT_REGIONS and lang.code in covered and len(out.setdefault(lang.region, [])) < per_region:
            out[lang.region].append(lang.code)
    return out


def sft_config(base: str, out: Path, data: list[str], region: str | None, args: argparse.Namespace) -> SFTModelConfig:
    """The SFT recipe of configs/sft-tools-gemma3-270m.yaml over `data` (kept to `region`), with as
    many steps as `args.passes` over the kept conversations take."""
    n = len(LanguageSelection(region=region).keep(chats(data), "sft-model"))
    steps = max(1, math.ceil(args.passes * n / args.grad_accum))
    train = TrainConfig(steps=steps, batch_size=1, grad_accum=args.grad_accum, lr=args.lr,
                        warmup_steps=max(1, steps // 20), schedule="cosine", weight_decay=0.0, clip=1.0,
                        bf16="auto", checkpoint_every=25, keep_checkpoints=1, log_every=5, seed=0)  # fmt: skip
    return SFTModelConfig(model=base, data=data, max_length=768, region=region, output_dir=out, train=train)


def sft(name: str, base: str, region: str | None, args: argparse.Namespace, data: list[str] = DATA) -> Path:
    """SFT run `name` (resumed if it was killed); its model folder."""
    out = args.root / name
    model = out / "model"
    if not (model / "sft.json").exists():
        cfg = sft_config(base, out, data, region, args)
        print(f"{name}: SFT, {cfg.train.steps} steps of {cfg.train.grad_accum} conversations", flush=True)
        run_sft(cfg, resume=(out / "run").exists())
        shutil.rmtree(out / "run" / "checkpoints", ignore_errors=True)  # the folder is written: resume needs none
    return model


def base_folder(base: str, root: Path) -> Path:
    """The base as a model folder (merges and evaluation read folders): itself, or a saved copy."""
    if (Path(base) / "config.json").exists():
        return Path(base)
    folder = root / "base" / "model"
    if not (folder / "config.json").exists():
        from aetheris.teacher.load import load_teacher

        loaded = load_teacher(base, dtype="float32")
        tmp = folder.with_name(".tmp-model")
        shutil.rmtree(tmp, ignore_errors=True)
        loaded.model.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        tmp.rename(folder)
    return folder


def merged(name: str, spec: dict[str, Any], root: Path) -> Path:
    out = root / name
    if not (out / "config.json").exists():
        print(f"{name}: merging ({spec['method']})", flush=True)
        merge(parse_merge_config(spec, name), out, name)
    return out


def merges(base: Path, glob: Path, regions: dict[str, Path], extra: str | None, root: Path) -> dict[str, Path]:
    out = {}
    for region, folder in regions.items():
        r = slug(region)
        out[f"linear-{r}"] = merged(f"linear-{r}", {"method": "linear", "models": [
            {"model": str(folder), "weight": 0.5}, {"model": str(glob), "weight": 0.5}]}, root)  # fmt: skip
        if region == extra:
            out[f"slerp-{r}"] = merged(f"slerp-{r}", {"method": "slerp", "base": str(glob), "t": 0.5,
                                                      "models": [{"model": str(folder)}]}, root)  # fmt: skip
            out[f"ties-{r}"] = merged(f"ties-{r}", {"method": "ties", "base": str(base), "models": [
                {"model": str(folder), "weight": 0.5, "density": 0.5},
                {"model": str(glob), "weight": 0.5, "density": 0.5}]}, root)  # fmt: skip
    return out


def evaluate(name: str, folder: Path, langs: list[str], args: argparse.Namespace) -> Path:
    """`name`'s results file (aetheris.results/1) on both tasks, scored where the cache lacks items."""
    path = args.results / "evals" / f"{name}.json"
    if path.exists():
        return path
    tools = ToolsTask([it for it in ToolsTask()._items if it.lang in langs and it.id in set(args.tools_ids)])
    tasks = [tools, get_task("flores_bpb")]
    lm = HFLM.load(str(folder), batch_size=args.batch_size, dtype=args.dtype)
    ensure_chat_template(lm.tokenizer)  # the base has none: every model is prompted through the fallback
    result = evaluate_model(lm, name, tasks, plan_languages(tasks, langs), args.root / "evals", shared_data_dir(),
                            limit={"flores_bpb": args.flores_limit},
                            settings={"dtype": args.dtype, "ids": sorted(args.tools_ids)})  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result["path"], path)
    return path


def against_global(evals: dict[str, Path], n_boot: int, done: dict[str, EquityReport]) -> dict[str, EquityReport]:
    """Each model's drop per region against the global model, with bootstrap intervals; the
    reports in `done` (a model's eval never changes once written) are reused, the rest added."""
    for name, path in evals.items():
        if name != GLOBAL and name not in done:
            done[name] = compare(evals[GLOBAL], path, level="region", n_boot=n_boot, n_perm=1000)
    return done


def tools_by_category(path: Path) -> dict[str, Any]:
    """Accuracy per language x category and the failure categories (bench_sft_tools' summary)."""
    data = json.loads(path.read_text())["tasks"]["tools"]["languages"]
    return summary({lang: block["items"] for lang, block in data.items()})


def cell(drop: float, ci: Any, own: bool) -> str:
    text = f"{drop:+.3f}" + ("" if ci is None else f" [{ci.low:+.3f}, {ci.high:+.3f}]")
    return f"**{text}**" if own else text


def tables(reports: dict[str, EquityReport], regions: list[str], reference: str = GLOBAL) -> str:
    """Per task: models x regions, the drop against `reference` (a model's own region in bold)."""
    parts = []
    for task in TASKS:
        rows = []
        for name, rep in reports.items():
            if task not in rep.tasks:
                continue
            by = {f.family: f for f in rep.tasks[task].families}
            rows.append([name, *(cell(by[r].drop, by[r].drop_ci, slug(r) in name) if r in by else "—"
                                 for r in regions)])  # fmt: skip
        metric = next((rep.tasks[task].metric for rep in reports.values() if task in rep.tasks), task)
        parts += [f"{task} ({metric}): model − {reference} per region, 95% bootstrap interval; positive = worse "
                  f"than {reference}; bold = the model's own region", table(["model", *regions], rows)]
    return "\n\n".join(parts)


def add_sft_eval_args(ap: argparse.ArgumentParser) -> None:
    """The SFT budget and evaluation knobs this bench shares with bench_arbitrage.py."""
    ap.add_argument("--base", default="gemma3-270m", help="embedded teacher name or model folder")
    ap.add_argument("--passes", type=float, default=1.0, help="passes over each run's conversations")
    ap.add_argument("--grad-accum", type=int, default=4, help="conversations per optimizer step")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--langs-per-region", type=int, default=2)
    ap.add_argument("--tools-ids", nargs="+", default=IDS, help="eval templates (e01-e21)")
    ap.add_argument("--flores-limit", type=int, default=32, help="SIB-200 test sentences per language")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--n-boot", type=int, default=1000)


def start(args: argparse.Namespace) -> dict[str, Any]:
    """The record's header (machine, CPU flags, date, command, budget), printed; makes --results."""
    args.results.mkdir(parents=True, exist_ok=True)
    header = {"machine": machine(), "cpu": cpu_summary(), "date": datetime.date.today().isoformat(),
              "command": " ".join(sys.argv), "base": args.base, "passes": args.passes}  # fmt: skip
    print(header["machine"], "|", header["cpu"], flush=True)
    return header


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_sft_eval_args(ap)
    ap.add_argument("--regions", nargs="+", default=list(SFT_REGIONS), choices=list(SFT_REGIONS))
    ap.add_argument("--extra-region", default="Africa", help="also merged by slerp and ties")
    ap.add_argument("--root", type=Path, default=ROOT / "runs" / "region-merge")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    header = start(args)
    by_region = eval_languages(args.langs_per_region)
    langs = [code for r in args.regions for code in by_region[r]]

    # Each model is scored as soon as it exists and the summary rewritten, so a run stopped midway
    # has already answered what it reached (base vs global first: issue 16 §1).
    evals: dict[str, Path] = {}
    models: dict[str, Path] = {}
    reports: dict[str, EquityReport] = {}

    def add(name: str, folder: Path) -> None:
        models[name] = folder
        write_sft_record(models, header, args)
        evals[name] = evaluate(name, folder, langs, args)
        if GLOBAL in evals:
            write_summary(evals, against_global(evals, args.n_boot, reports), by_region, header, args)

    base = base_folder(args.base, args.root)
    add("base", base)
    glob = sft(GLOBAL, str(base), None, args)
    add(GLOBAL, glob)
    region_models = {}
    for r in args.regions:
        region_models[r] = sft(f"region-{slug(r)}", str(base), r, args)
        add(f"region-{slug(r)}", region_models[r])
    for name, folder in merges(base, glob, region_models, args.extra_region, args.root).items():
        add(name, folder)
    print((args.results / "summary.md").read_text())


def write_sft_record(models: dict[str, Path], header: dict[str, Any], args: argparse.Namespace) -> None:
    runs = {name: json.loads((folder / "sft.json").read_text()) for name, folder in models.items()
            if (folder / "sft.json").exists()}  # fmt: skip
    write_json(args.results / "sft.json", {**header, "runs": {n: {k: r[k] for k in ("region", "conversations",
               "optimizer_steps", "samples", "epochs", "seconds")} for n, r in runs.items()}})  # fmt: skip


def write_summary(evals: dict[str, Path], reports: dict[str, EquityReport], by_region: dict[str, list[str]],
                  header: dict[str, Any], args: argparse.Namespace) -> None:
    """summary.json/.md and the plots over the models scored so far."""
    regions = list(args.regions)
    write_json(args.results / "summary.json", {
        **header, "languages": {r: by_region[r] for r in regions},
        "tools_by_category": {name: tools_by_category(path) for name, path in evals.items()},
        "against_global": {name: rep.model_dump(mode="json") for name, rep in reports.items()},
    })  # fmt: skip
    (args.results / "summary.md").write_text(tables(reports, regions) + "\n", encoding="utf-8")
    for task in TASKS:
        (args.results / f"{task}_vs_global.png").write_bytes(family_drops(list(reports.values()), task))


if __name__ == "__main__":
    main()
