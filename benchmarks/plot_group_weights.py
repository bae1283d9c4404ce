"""Plot group DRO's q over a KD run, one line per group, from the run's metrics.jsonl.

    python benchmarks/plot_group_weights.py RUN/runs/kd/metrics.jsonl --out q.png [--title T]

The KD stage logs `q/<group>` at every logged step (train.kd.log_every) when kd.weighting is
group_dro; see aetheris.distill.group_dro.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aetheris.report.plots import group_weights


def read_records(metrics: Path) -> list[dict]:
    """The logged steps of a metrics.jsonl; a line torn by a kill mid-write is skipped."""
    records = []
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("metrics", type=Path, help="a KD run's metrics.jsonl")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--title", default=None)
    a = p.parse_args()
    png = group_weights(read_records(a.metrics), a.title or f"group DRO q: {a.metrics}")
    a.out.write_bytes(png)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
