"""benchmarks/bench_bos.py on a tiny Llama: every context scores the same targets, and the record."""

import json
import math
import sys
from pathlib import Path

import torch
from eval_tiny import save_embedded_teacher

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_bos  # noqa: E402


def test_contexts_and_the_record(tmp_path):
    assert bench_bos.context("packed+bos", [7, 8], 1, 2) == [1, 7, 8, 2, 1]
    assert bench_bos.context("none", [7, 8], 1, 2) == []
    teacher = save_embedded_teacher(tmp_path / "teacher", hidden=32)
    out = tmp_path / "bos.json"
    bench_bos.main(["--teacher", str(teacher), "--langs", "en", "sw", "--sentences", "2", "--out", str(out)])
    record = json.loads(out.read_text())
    assert set(record["bits_per_byte"]) == {"en", "sw"} and set(record["mean"]) == set(bench_bos.MODES)
    assert all(v > 0 and math.isfinite(v) for lang in record["bits_per_byte"].values() for v in lang.values())


def test_bits_score_only_the_targets_after_the_first_token():
    torch.manual_seed(0)
    model = torch.nn.Module()
    logits = torch.randn(1, 6, 10)
    model.forward = lambda ids: type("O", (), {"logits": logits[:, : ids.shape[1]]})()  # noqa: E731
    ids = [3, 4, 5]
    got = bench_bos.bits(model, [1, 2], ids)  # context of 2: positions 2..4 predict tokens 4, 5
    logp = torch.log_softmax(logits[0], -1)
    assert math.isclose(got, -(float(logp[2, 4]) + float(logp[3, 5])) / math.log(2), rel_tol=1e-5)
