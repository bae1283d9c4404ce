"""benchmarks/summarise_hybrid.py on a synthetic results folder in bench_hybrid.py's format."""

import json
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from summarise_hybrid import frontier_points, summarise  # noqa: E402

TEACHER = {
    "name": "teacher", "dtype": "bfloat16", "parameters": 268_098_176, "n_layers": 18,
    "flores": {"bits_per_byte": {"en": 1.0, "fr": 1.2, "yo": 3.0, "sw": 2.0}, "mean_bits_per_byte": 1.8},
    "decode": {"512": {"ms_per_token": 50.0, "cache_bytes": 9_000_000},
               "8192": {"ms_per_token": 80.0, "cache_bytes": 33_000_000}},
}  # fmt: skip
DONE = {
    "name": "full-50-upcycle", "layout": "AMSM" * 9, "experts": "upcycle", "kd_steps": 3,
    "parameters": 486_000_000, "active_parameters": 274_000_000, "held_out_kl_before": 4.88,
    "held_out_kl_after": 1.5, "kd_tokens_seen": 200704, "kd_seconds": 1234.0, "disk_peak_bytes": 6_500_000_000,
    # no "sw": the means compare the three shared languages only
    "flores": {"bits_per_byte": {"en": 1.1, "fr": 1.5, "yo": 3.6}, "mean_bits_per_byte": 2.0667},
    "decode": {"512": {"ms_per_token": 40.0, "cache_bytes": 4_500_000},
               "8192": {"ms_per_token": 40.0, "cache_bytes": 4_500_000}},
}  # fmt: skip
PARTIAL = {"name": "full-0-split", "layout": "SM" * 18, "experts": "split", "kd_steps": 3,
           "disk_peak_bytes": 4_000_000_000, "stage_seconds": {"init": 30.0}}  # fmt: skip


def results(tmp_path):
    d = tmp_path / "hybrid"
    d.mkdir()
    for rec in (TEACHER, DONE, PARTIAL):
        (d / f"{rec['name']}.json").write_text(json.dumps(rec))
    return d


def test_table_shows_every_student_with_what_it_has(tmp_path):
    d = results(tmp_path)
    text = summarise(d, d)
    assert (d / "table.md").read_text() == text
    lines = text.splitlines()
    row = next(ln for ln in lines if ln.startswith("| full-50-upcycle |"))
    # shared languages en, fr, yo: student 2.067 vs teacher 1.733 -> 1.19x
    assert "36 blocks: 9 A, 9 S, 18 M" in row and "486M (274M)" in row and "4.88 → 1.50" in row
    assert "2.067 (1.19x)" in row and "| 3 |" in row and "6.5 GB | 200704 | 1234 |" in row
    partial = next(ln for ln in lines if ln.startswith("| full-0-split |"))
    assert "18 S, 18 M" in partial and "4.0 GB" in partial and partial.count("—") >= 4
    assert lines.index(row) < lines.index(partial)  # more attention first
    # family gaps: Indo-European (en, fr) +0.2, Niger-Congo (yo only shared) +0.6
    gaps = next(ln for ln in lines if ln.startswith("| full-50-upcycle |") and "+0.600" in ln)
    assert "+0.200" in gaps
    header = next(ln for ln in lines if ln.startswith("| student | Indo-European"))
    assert "Niger-Congo (2)" in header
    decode = next(ln for ln in lines if ln.startswith("| full-50-upcycle |") and "ms" not in ln and "(0.50x)" in ln)
    assert "40.0 (0.80x)" in decode and "4.5 (0.14x)" in decode  # 40 / 50 ms at 512, 4.5 / 33 MB at 8k
    assert "Still running (partial records): full-0-split." in text


def test_frontier_has_the_teacher_and_the_students_with_both_figures(tmp_path):
    d = results(tmp_path)
    points = frontier_points(TEACHER, [DONE, PARTIAL], 8192)
    assert [p[0] for p in points] == ["teacher", "full-50-upcycle"]
    assert points[1][1] == 40.0 and abs(points[1][2] - (1.1 + 1.5 + 3.6) / 3) < 1e-9
    summarise(d, tmp_path / "out", length=512)
    with Image.open(tmp_path / "out" / "frontier.png") as img:
        assert img.format == "PNG" and img.size[0] > 300
