"""The report end to end on synthetic results (teacher + 2 students), rendered in headless Chromium."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from exact_tokenizers import CharTokenizer, byte_tokenizer
from matplotlib.image import imread
from typer.testing import CliRunner

from aetheris.cli import app
from aetheris.equity import compare
from aetheris.report import build_report

FAMILY = {
    "sw": "Niger-Congo",
    "yo": "Niger-Congo",
    "de": "Indo-European",
    "hi": "Indo-European",
    "zh": "Sino-Tibetan",
    "ar": "Afro-Asiatic",
}
TIER = {"sw": 2, "yo": 2, "de": 5, "hi": 4, "zh": 5, "ar": 5}
FLORES = {
    "sw": "swh_Latn",
    "yo": "yor_Latn",
    "de": "deu_Latn",
    "hi": "hin_Deva",
    "zh": "zho_Hans",
    "ar": "arb_Arab",
}


def data_dir() -> Path:
    env = os.environ.get("AETHERIS_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def synthetic(name: str, acc_loss: dict[str, float], bpb_gain: dict[str, float], seed: int) -> dict:
    """Results in the aetheris.results/1 schema; the same item ids in every model (paired)."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0)  # shared item difficulty, so teacher and students correlate
    tasks = {
        "xcopa": {"metric": "acc", "higher_is_better": True, "languages": {}},
        "flores_bpb": {"metric": "bits_per_byte", "higher_is_better": False, "languages": {}},
    }
    for lang in FAMILY:
        p = np.clip(base.uniform(0.55, 0.9, 80) - acc_loss[lang], 0, 1)
        scores = (rng.uniform(size=80) < p).astype(float)
        items = [{"id": f"test-{i}", "score": float(v)} for i, v in enumerate(scores)]
        tasks["xcopa"]["languages"][lang] = {"score": float(scores.mean()), "n": 80, "items": items}
        nbytes = base.integers(80, 200, 50)
        bits = nbytes * (base.uniform(0.9, 1.6, 50) + bpb_gain[lang] + rng.normal(0, 0.02, 50))
        items = [
            {"id": str(i), "score": float(b / n), "bits": float(b), "bytes": int(n)}
            for i, (b, n) in enumerate(zip(bits, nbytes, strict=True))
        ]
        tasks["flores_bpb"]["languages"][lang] = {
            "score": float(bits.sum() / nbytes.sum()),
            "n": 50,
            "items": items,
        }
    return {
        "schema": "aetheris.results/1",
        "model": f"runs/{name}",
        "model_name": name,
        "created": "2026-11-23T10:00:00Z",
        "tasks": tasks,
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("results")
    zero = dict.fromkeys(FAMILY, 0.0)
    # student "fair": everyone loses a little; student "skewed": Niger-Congo pays most
    fair = dict.fromkeys(FAMILY, 0.05)
    skewed = {"sw": 0.3, "yo": 0.35, "de": 0.02, "hi": 0.08, "zh": 0.05, "ar": 0.1}
    out = []
    for name, loss, gain, seed in [
        ("teacher", zero, zero, 1),
        ("fair", fair, fair, 2),
        ("skewed", skewed, skewed, 3),
    ]:
        path = d / f"{name}.json"
        path.write_text(json.dumps(synthetic(name, loss, gain, seed)))
        out.append(path)
    return out


@pytest.fixture(scope="module")
def report_dir(files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    build_report(
        files,
        out,
        family_of=FAMILY,
        tier_of=TIER,
        flores_of=FLORES,
        data_dir=data_dir(),
        tokenizers={"bytes": byte_tokenizer(), "chars": CharTokenizer()},
        n_boot=200,
        n_perm=500,
        seed=0,
    )
    return out


def test_results_json_matches_equity(files, report_dir):
    data = json.loads((report_dir / "results.json").read_text())
    assert data["teacher"] == "teacher" and data["students"] == ["fair", "skewed"]
    direct = compare(files[0], files[2], family_of=FAMILY, tier_of=TIER, n_boot=200, n_perm=500)
    skewed = data["equity"][1]
    assert skewed["tasks"]["xcopa"]["des"] == pytest.approx(direct.tasks["xcopa"].des)
    assert skewed["tasks"]["xcopa"]["des_ci"] == direct.tasks["xcopa"].des_ci.model_dump()
    assert skewed["tasks"]["xcopa"]["worst_family"] == "Niger-Congo"
    # the skewed student is less fair than the fair one on both tasks
    for task in ("xcopa", "flores_bpb"):
        assert data["equity"][1]["tasks"][task]["des"] > data["equity"][0]["tasks"][task]["des"]
    # fertility: 6 languages x 2 tokenizers; the byte tokenizer's bytes/token is exactly 1
    assert len(data["fertility"]) == 12
    assert all(r["bytes_per_token"] == 1.0 for r in data["fertility"] if r["tokenizer"] == "bytes")
    assert {s["script"] for s in data["fertility_by_script"]} == {"Latn", "Deva", "Hans", "Arab"}
    assert skewed["tasks"]["xcopa"]["spearman_fertility"]["n"] == 6


def test_markdown_and_html_are_complete_and_offline(report_dir):
    md = (report_dir / "report.md").read_text()
    figures = re.findall(r"\]\(figures/([^)]+)\)", md)
    assert set(figures) == {
        "des.png",
        "xcopa_families.png",
        "xcopa_scatter.png",
        "flores_bpb_families.png",
        "flores_bpb_scatter.png",
        "fertility_by_script.png",
    }
    for name in figures:
        assert (report_dir / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Task: xcopa" in md and "| Niger-Congo |" in md and "Degradation Equity Score" in md
    html = (report_dir / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(figures)
    # nothing fetched from anywhere: no external src/href, no @import or url() in the style
    assert not re.search(r'(src|href)="(?!data:)', html) and "@import" not in html and "url(" not in html


def test_teacher_option_picks_the_teacher(files, tmp_path):
    data = build_report(
        [files[1], files[0], files[2]], tmp_path, teacher=files[0], family_of=FAMILY, n_boot=50, n_perm=50
    )
    assert data.teacher == "teacher" and data.students == ["fair", "skewed"]
    with pytest.raises(ValueError, match="at least one student"):
        build_report([files[0]], tmp_path, family_of=FAMILY)


def test_pairs_add_paired_des_differences(files, tmp_path):
    data = build_report(files, tmp_path, family_of=FAMILY, n_boot=100, n_perm=50,
                        pairs=[("skewed", "fair"), ("skewed", "pruned")])
    assert [(d.task, d.a, d.b) for d in data.des_differences] == [("xcopa", "skewed", "fair"),
                                                                   ("flores_bpb", "skewed", "fair")]
    des = {(rep.student, t): eq.des for rep in data.equity for t, eq in rep.tasks.items()}
    for d in data.des_differences:  # Niger-Congo paid most in "skewed"
        assert d.difference == pytest.approx(des["skewed", d.task] - des["fair", d.task])
        assert d.difference > 0 and d.share_a_higher > 0.9 and d.paired
    assert data.des_differences_skipped == ["skewed vs pruned (pruned: no results)"]
    md = (tmp_path / "report.md").read_text()
    assert "Paired DES differences" in md and "| xcopa | skewed | fair |" in md
    assert "Not compared: skewed vs pruned (pruned: no results)." in md
    assert json.loads((tmp_path / "results.json").read_text())["des_differences"][0]["a"] == "skewed"


def test_cli_reports_bad_input(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    res = CliRunner().invoke(app, ["report", str(bad), str(bad), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "bad.json: not valid JSON" in res.output


def test_cli_with_registry_maps(files, tmp_path):
    pytest.importorskip("aetheris.languages")
    res = CliRunner().invoke(
        app,
        [
            "report",
            *map(str, files),
            "-o",
            str(tmp_path),
            "--n-boot",
            "50",
            "--n-perm",
            "50",
            "--level",
            "group",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "results.json").read_text())["level"] == "group"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium(report_dir, tmp_path):
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            (report_dir / "report.html").resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    img = imread(shot)[..., :3]
    assert img.shape[:2] == (1600, 1200)
    non_white = np.mean(np.any(img < 0.95, axis=-1))
    colours = len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert non_white > 0.05 and colours > 50, (non_white, colours)
