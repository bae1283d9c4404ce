"""The hybrid study's table and frontier plot from bench_hybrid.py's result files (issue 13 §2).

Reads <results>/teacher.json and every other <results>/*.json (one per student, written as
bench_hybrid.py gets its figures; a student still running has a partial record and is shown with
what it has) and writes:

    <out>/table.md      students beside the teacher: layout, experts, parameters, held-out KL
                        before -> after KD, mean FLORES bits/byte and its ratio to the teacher on
                        the same languages, the gap per language family (aetheris.languages),
                        decode ms/token and cache bytes per context length with their ratio to
                        the teacher, disk peak, KD seconds
    <out>/frontier.png  mean bits/byte vs decode ms/token at one context (8k by default): one
                        point per student with both figures, plus the teacher

    python benchmarks/summarise_hybrid.py [--results benchmarks/results/hybrid] [--out DIR] [--length 8192]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

from aetheris import languages
from aetheris.languages import UnknownLanguageError

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "hybrid"
DASH = "—"
Record = dict[str, Any]


def load(results: Path) -> tuple[Record, list[Record]]:
    """(the teacher's record, the students' records in study order)."""
    teacher_file = results / "teacher.json"
    if not teacher_file.exists():
        raise SystemExit(f"{teacher_file}: no teacher record (bench_hybrid.py writes it first)")
    teacher = json.loads(teacher_file.read_text(encoding="utf-8"))
    students = []
    for path in sorted(results.glob("*.json")):
        if path.name == "teacher.json":
            continue
        rec = json.loads(path.read_text(encoding="utf-8"))
        rec.setdefault("name", path.stem)
        students.append(rec)
    return teacher, sorted(students, key=_order)


def _order(rec: Record) -> tuple:
    """full depth first, then more attention first, split before upcycle; other names after."""
    parts = rec["name"].split("-")
    if len(parts) == 3 and parts[1].isdigit():
        return (0, parts[0] != "full", -int(parts[1]), parts[2] != "split", rec["name"])
    return (1, rec["name"])


def bits_per_byte(rec: Record) -> dict[str, float]:
    return dict((rec.get("flores") or {}).get("bits_per_byte") or {})


def shared_means(student: Record, teacher: Record) -> tuple[float, float, int] | None:
    """(student mean, teacher mean, languages) over the languages both were scored on."""
    s, t = bits_per_byte(student), bits_per_byte(teacher)
    common = sorted(set(s) & set(t))
    if not common:
        return None
    return statistics.mean(s[c] for c in common), statistics.mean(t[c] for c in common), len(common)


def family_of(code: str) -> str:
    try:
        return languages.get(code).family
    except UnknownLanguageError:
        return "unknown"


def family_gaps(student: Record, teacher: Record) -> dict[str, float]:
    """Family -> mean over its languages of (student - teacher) bits/byte (positive = worse)."""
    s, t = bits_per_byte(student), bits_per_byte(teacher)
    by_family: dict[str, list[float]] = {}
    for code in sorted(set(s) & set(t)):
        by_family.setdefault(family_of(code), []).append(s[code] - t[code])
    return {f: statistics.mean(v) for f, v in sorted(by_family.items())}


def decode(rec: Record) -> dict[int, Record]:
    return {int(n): v for n, v in (rec.get("decode") or {}).items()}


def layout_summary(layout: str | None) -> str:
    if not layout:
        return DASH
    counts = [f"{layout.count(c)} {c}" for c in "ASM" if c in layout]
    return f"{len(layout)} blocks: " + ", ".join(counts)


def _num(v: float | None, fmt: str = "{:.3f}") -> str:
    return DASH if v is None else fmt.format(v)


def _params(rec: Record) -> str:
    total, active = rec.get("parameters"), rec.get("active_parameters")
    if total is None:
        return DASH
    return f"{total / 1e6:.0f}M" + ("" if active is None else f" ({active / 1e6:.0f}M)")


def _kl(rec: Record) -> str:
    before, after = rec.get("held_out_kl_before"), rec.get("held_out_kl_after")
    if before is None:
        return DASH
    return f"{before:.2f} → {_num(after, '{:.2f}')}"


def _gb(n: int | None) -> str:
    return DASH if n is None else f"{n / 1e9:.1f} GB"


def _md(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def main_table(teacher: Record, students: list[Record]) -> list[str]:
    header = ["student", "layout", "experts", "parameters (active)", "held-out KL before → after KD",
              "FLORES bits/byte (x teacher)", "languages", "disk peak", "KD tokens", "KD s"]  # fmt: skip
    t_mean = (teacher.get("flores") or {}).get("mean_bits_per_byte")
    t_langs = len(bits_per_byte(teacher))
    rows = [["teacher", DASH, DASH, _params(teacher), DASH, _num(t_mean), str(t_langs or DASH), DASH, DASH, DASH]]
    for rec in students:
        means = shared_means(rec, teacher)
        bpb = DASH if means is None else f"{means[0]:.3f} ({means[0] / means[1]:.2f}x)"
        kd_s = rec.get("kd_seconds")
        rows.append([rec["name"], layout_summary(rec.get("layout")), rec.get("experts", DASH), _params(rec), _kl(rec),
                     bpb, DASH if means is None else str(means[2]), _gb(rec.get("disk_peak_bytes")),
                     str(rec.get("kd_tokens_seen", DASH)), DASH if kd_s is None else f"{kd_s:.0f}"])  # fmt: skip
    return _md(header, rows)


def family_table(teacher: Record, students: list[Record]) -> list[str]:
    gaps = {rec["name"]: family_gaps(rec, teacher) for rec in students}
    families = sorted({f for g in gaps.values() for f in g})
    if not families:
        return ["(no student has FLORES scores yet)"]
    t = bits_per_byte(teacher)
    count = {f: sum(family_of(c) == f for c in t) for f in families}
    header = ["student", *(f"{f} ({count[f]})" for f in families)]
    rows = [[name, *(_num(g.get(f), "{:+.3f}") for f in families)] for name, g in gaps.items() if g]
    return _md(header, rows)


def decode_table(teacher: Record, students: list[Record]) -> list[str]:
    t = decode(teacher)
    lengths = sorted(set(t) | {n for rec in students for n in decode(rec)})
    if not lengths:
        return ["(no decode figures yet)"]
    header = ["model", *(f"{n} ms/token (x teacher)" for n in lengths), *(f"{n} cache MB (x teacher)" for n in lengths)]

    def cells(rec: Record) -> list[str]:
        d, out = decode(rec), []
        for key, scale, fmt in (("ms_per_token", 1.0, "{:.1f}"), ("cache_bytes", 1e-6, "{:.1f}")):
            for n in lengths:
                v, ref = d.get(n, {}).get(key), t.get(n, {}).get(key)
                if v is None:
                    out.append(DASH)
                else:
                    ratio = f" ({v / ref:.2f}x)" if ref and rec is not teacher else ""
                    out.append(fmt.format(v * scale) + ratio)
        return out

    return _md(header, [["teacher", *cells(teacher)]] + [[r["name"], *cells(r)] for r in students])


def render(teacher: Record, students: list[Record]) -> str:
    lines = ["# Hybrid students beside their teacher", ""]
    meta = [f"{k}: {teacher[k]}" for k in ("machine", "cpu", "dtype", "kd_tokens") if k in teacher]
    if meta:
        lines += ["Teacher row: " + "; ".join(meta) + ".", ""]
    lines += main_table(teacher, students) + [""]
    lines += ["Bits/byte: FLORES (SIB-200 `test`) mean over the languages both the student and the teacher were "
              "scored on; x teacher = student / teacher (lower is better).", ""]  # fmt: skip
    lines += ["## Gap to the teacher per language family (student - teacher bits/byte, mean over the family's "
              "languages; language count in brackets)", ""] + family_table(teacher, students) + [""]  # fmt: skip
    lines += ["## Decoding (ms/token after a context of n tokens, and the cache's size; x teacher = student / "
              "teacher, below 1 is faster or smaller)", ""] + decode_table(teacher, students) + [""]  # fmt: skip
    layouts = [(r["name"], r["layout"]) for r in students if r.get("layout")]
    if layouts:
        lines += ["## Layouts (A attention, S SSM, M MoE)", ""] + [f"- {n}: `{lay}`" for n, lay in layouts] + [""]
    partial = [r["name"] for r in students if "decode" not in r]
    if partial:
        lines += [f"Still running (partial records): {', '.join(partial)}.", ""]
    return "\n".join(lines)


def frontier_points(teacher: Record, students: list[Record], length: int) -> list[tuple[str, float, float]]:
    """(name, decode ms/token at `length`, mean bits/byte) for the teacher and every student with both;
    a student's bits/byte is its mean over the languages it shares with the teacher."""
    points = []
    t_ms = decode(teacher).get(length, {}).get("ms_per_token")
    t_mean = (teacher.get("flores") or {}).get("mean_bits_per_byte")
    if t_ms is not None and t_mean is not None:
        points.append(("teacher", t_ms, t_mean))
    for rec in students:
        ms, means = decode(rec).get(length, {}).get("ms_per_token"), shared_means(rec, teacher)
        if ms is not None and means is not None:
            points.append((rec["name"], ms, means[0]))
    return points


def frontier_png(points: list[tuple[str, float, float]], length: int, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.add_subplot()
    for name, ms, bpb in points:
        teacher = name == "teacher"
        ax.scatter([ms], [bpb], s=70 if teacher else 40, marker="*" if teacher else "o",
                   color="black" if teacher else "#1f77b4", zorder=3)  # fmt: skip
        ax.annotate(name, (ms, bpb), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel(f"decode ms/token at {length} tokens of context (lower is faster)")
    ax.set_ylabel("FLORES bits/byte, mean over languages (lower is better)")
    ax.set_title("Hybrid students: quality vs decode speed")
    ax.grid(alpha=0.3)
    if not points:
        ax.text(0.5, 0.5, "no model has both figures yet", ha="center", va="center", transform=ax.transAxes)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    os.replace(tmp, path)


def summarise(results: Path, out: Path, length: int = 8192) -> str:
    """Write out/table.md and out/frontier.png; returns the Markdown."""
    teacher, students = load(results)
    out.mkdir(parents=True, exist_ok=True)
    text = render(teacher, students)
    tmp = out / ".table.md.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out / "table.md")
    frontier_png(frontier_points(teacher, students, length), length, out / "frontier.png")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--out", type=Path, default=None, help="default: the results folder")
    ap.add_argument("--length", type=int, default=8192, help="context length of the frontier plot's decode figure")
    args = ap.parse_args()
    print(summarise(args.results, args.out or args.results, args.length))


if __name__ == "__main__":
    main()
