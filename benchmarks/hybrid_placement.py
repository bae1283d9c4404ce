"""Student names with a measured attention placement, for bench_hybrid.py to import (issue 13 §2).

bench_hybrid.py names students `<depth>-<percent>-<experts>` and spaces attention evenly. A `p`
after the percent asks for the same number of attention layers where the per-layer probe says
replacing them costs most (`student.attention_layers: probe`, src/aetheris/distill/attention_probe.py):

    full-50-upcycle     attention on 9 of 18 layers, evenly spaced (MambaInLlama)
    full-50p-upcycle    attention on the 9 layers whose replacement raises held-out KL most
    full-50p-splittok   the same, with `split` experts of `student.split_partition: tokens` and
                        routers fitted to the output (`split_router: output`; BENCHMARKS §10c)

To use it, bench_hybrid.py's `run_config` takes its student fields from `student_fields` (or
calls this module's `run_config`), and reads the layout a probed student really got from its
run folder (`resolved_layout`), since the config's layout is then all-SSM until init places the
attention.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from aetheris.distill.config import RunConfig, parse_config
from aetheris.distill.layer_map import place_attention

# The <experts> part of a name: the student fields it sets.
EXPERTS = {
    "upcycle": {"experts": "upcycle"},
    "split": {"experts": "split"},
    "splittok": {"experts": "split", "split_partition": "tokens", "split_router": "output"},
}


def student_fields(name: str, n_layers: int) -> dict[str, Any]:
    """The `student` section's layout, experts and attention choice for a student name."""
    depth, percent, experts = name.split("-")
    if experts not in EXPERTS:
        raise ValueError(f"student {name!r}: experts {experts!r}, expected one of {list(EXPERTS)}")
    fields = EXPERTS[experts]
    if depth == "12blk":
        return {"layout": "SM" * 6, **fields}
    if depth != "full":
        raise ValueError(f"student {name!r}: expected full-<percent>[p]-<experts> or 12blk-0-<experts>")
    probe = percent.endswith("p")
    fraction = int(percent.rstrip("p")) / 100
    full = "SM" * n_layers
    if probe:
        return {"layout": full, **fields, "attention_layers": "probe", "attention_fraction": fraction}
    return {"layout": place_attention(full, list(range(n_layers)), "uniform", fraction), **fields}


def config_dict(base: dict, name: str, n_layers: int, kd_tokens: int, out_root: Path) -> dict[str, Any]:
    """The base config (a copy) with the student's fields, the KD steps that make `kd_tokens`, and
    the output folder `out_root/name`."""
    cfg = json.loads(json.dumps(base))
    cfg["student"].update(student_fields(name, n_layers))
    kd = cfg["train"]["kd"]
    per_step = kd["batch_size"] * kd.get("grad_accum", 1) * cfg["data"]["seq_len"]
    kd["steps"] = max(1, math.ceil(kd_tokens / per_step))
    cfg["output_dir"] = str(out_root / name)
    return cfg


def run_config(base: dict, name: str, n_layers: int, kd_tokens: int, out_root: Path) -> RunConfig:
    """bench_hybrid's run config for a student name: `config_dict`, validated."""
    return parse_config(config_dict(base, name, n_layers, kd_tokens, out_root), f"{name} (from the base config)")


def teacher_n_layers(name: str) -> int:
    """The teacher's layer count, from its config alone (no weights loaded)."""
    from transformers import AutoConfig

    from aetheris.teacher.load import model_location

    return AutoConfig.from_pretrained(model_location(name)).num_hidden_layers


def resolved_layout(run_dir: Path) -> str | None:
    """The layout init gave the student (the last stage folder that still exists)."""
    for stage in ("kd", "align", "init"):
        config = Path(run_dir) / stage / "config.json"
        if config.exists():
            return json.loads(config.read_text(encoding="utf-8"))["layout"]
    return None
