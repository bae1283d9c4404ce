"""Issue 13 §2: how much of each teacher MLP a top-1 `split` expert keeps at init, and whether
the router or the partition is what loses it.

For every layer of the teacher, on held-out tokens (never the calibration rows), the normalised
error ‖MLP(x) − expert(x)‖² / ‖MLP(x)‖² (mean over tokens; `aetheris.distill.init.expert_errors`)
of the expert that:

- `activation`: the router fitted to each group's mean |activation| picks (MoEfication, today's
  default, `student.split_router: activation`);
- `output`: the router fitted to the error itself picks (`student.split_router: output`);
- `oracle`: the best of the four experts for that token (no router does better with this partition);
- `random-oracle`: the best of four experts of a random equal partition (what k-means buys);
- `balanced-oracle`: the best assignment that gives every expert an equal share of the tokens,
  which is where training's load-balancing loss pushes the router.

`--partitions neurons tokens` also measures `student.split_partition: tokens` (`token_experts`:
each expert is the neurons that carry one equal share of the tokens), its columns prefixed `tokens-`.

1.0 means an expert adds nothing (as good as no MLP); above 1, worse than none. Rows come from the
run config's data exactly as `stage_init` draws them (calibration: `align.calibration_samples`
rows at `train.align.seed`; held-out: `kd.held_out_rows` held-out rows at `train.kd.seed + 1`).

    python benchmarks/bench_split_init.py [--config configs/hybrid-gemma3-270m-probe50.yaml]
        [--out benchmarks/results/split_init.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch
from common import machine, table

from aetheris.distill.calibration import mlp_inputs
from aetheris.distill.config import load_config
from aetheris.distill.init import balanced_assign, expert_errors, split_mlp
from aetheris.distill.pipeline import Run
from aetheris.precision import cpu_summary
from aetheris.teacher import introspect

ROOT = Path(__file__).resolve().parents[1]
CHOICES = ("activation", "output", "oracle", "balanced-oracle", "random-oracle")
SHARES = ("activation-top-share", "output-top-share", "oracle-top-share")
PREFIX = {"neurons": "", "tokens": "tokens-"}


def stacked(rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([r["input_ids"] for r in rows]), torch.stack([r["attention_mask"] for r in rows])


def layer_errors(mlp, calib: torch.Tensor, held: torch.Tensor, n_experts: int, seed: int,
                 partitions: tuple[str, ...] = ("neurons",)) -> dict[str, float]:  # fmt: skip
    out = {}
    for partition in partitions:
        p = PREFIX[partition]
        for target in ("activation", "output"):
            groups, router = split_mlp(mlp, calib, n_experts, router_target=target, partition=partition)
            errors = expert_errors(mlp, held, groups)
            picked = (held @ router.T.float()).argmax(1, keepdim=True)
            out[f"{p}{target}"] = float(errors.gather(1, picked).mean())
            out[f"{p}{target}-top-share"] = _top_share(picked)
        out[f"{p}oracle"] = float(errors.min(1).values.mean())
        out[f"{p}oracle-top-share"] = _top_share(errors.argmin(1))
        share = balanced_assign(-errors, -(-errors.shape[0] // n_experts))
        out[f"{p}balanced-oracle"] = float(errors.gather(1, share[:, None]).mean())
    perm = torch.randperm(mlp.intermediate_size, generator=torch.Generator().manual_seed(seed))
    out["random-oracle"] = float(expert_errors(mlp, held, list(perm.chunk(n_experts))).min(1).values.mean())
    return out


def _top_share(picked: torch.Tensor) -> float:
    """The share of tokens routed to the busiest expert (0.25 = balanced, 1.0 = one expert)."""
    return float(torch.bincount(picked.flatten()).max() / picked.numel())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "hybrid-gemma3-270m-probe50.yaml")
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--layers", type=int, nargs="+", default=None, help="these teacher layers only (default: all)")
    ap.add_argument("--partitions", nargs="+", default=["neurons"], choices=list(PREFIX))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "split_init.json")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    info = {"machine": machine(), "cpu": cpu_summary(), "teacher": cfg.teacher.name, "config": str(args.config),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": "python " + " ".join(sys.argv if argv is None else ["bench_split_init.py", *argv])}  # fmt: skip
    for key, value in info.items():
        print(f"{key}: {value}", flush=True)
    run = Run(cfg)
    started = time.perf_counter()
    spec = introspect(run.teacher.model)
    calib = run.packed(cfg.data.train, cfg.align.calibration_samples, seed=cfg.train.align.seed)
    held = run.packed(cfg.data.eval or cfg.data.train, cfg.kd.held_out_rows, seed=cfg.train.kd.seed + 1, held_out=True)
    layers = args.layers or list(range(spec.num_layers))
    key = {"teacher": cfg.teacher.name, "config": str(args.config), "experts": args.experts, "layers": layers,
           **({"partitions": args.partitions} if args.partitions != ["neurons"] else {})}  # fmt: skip
    # A stopped run resumes: each layer is written as it finishes, under this key.
    record = json.loads(args.out.read_text()) if args.out.exists() else {}
    results = {int(i): r for i, r in record.get("layers", {}).items()} if record.get("key") == key else {}
    record = {"bench": "split_init", **info, "key": key, **{k: record[k] for k in ("calibration_tokens",
              "held_out_tokens") if results and k in record}, "layers": results}  # fmt: skip
    with torch.no_grad():
        (ids, mask), (held_ids, held_mask) = stacked(calib), stacked(held)
        x_calib = mlp_inputs(run.teacher.model, ids, layers, mask)
        x_held = mlp_inputs(run.teacher.model, held_ids, layers, held_mask)
        record.update(calibration_tokens=int(x_calib[0].shape[0]), held_out_tokens=int(x_held[0].shape[0]))
        for i in [i for i in layers if i not in results]:
            results[i] = layer_errors(spec.layers[i].mlp, x_calib[i].float(), x_held[i].float(), args.experts,
                                      seed=i, partitions=tuple(args.partitions))  # fmt: skip
            print(i, {k: round(v, 4) for k, v in results[i].items()}, flush=True)
            _write(args.out, record)
    names = [PREFIX[p] + c for p in args.partitions for c in (*CHOICES, *SHARES)]
    cols = [c for c in dict.fromkeys(names) if all(c in r for r in results.values())]
    mean = {c: sum(r[c] for r in results.values()) / len(results) for c in cols}
    rows = [[i, *(results[i][c] for c in cols)] for i in layers] + [["mean", *(mean[c] for c in cols)]]
    print(table(["teacher layer", *cols], rows))
    record.update(mean=mean, seconds_this_run=time.perf_counter() - started)
    _write(args.out, record)
    print(f"wrote {args.out}")
    return record


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()
