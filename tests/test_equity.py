"""Equity statistics against values computed by hand on small fixed tables."""

import json

import numpy as np
import pytest

from aetheris.equity import compare, des, des_difference, permutation_p
from aetheris.eval.results import load_results


def results(name, tasks):
    """A results dict in the aetheris.results/1 schema. tasks: {task: (hib, {lang: score|items})}."""
    out = {"schema": "aetheris.results/1", "model": name, "model_name": name,
           "created": "2026-11-23T10:00:00Z", "tasks": {}}
    for task, (hib, langs) in tasks.items():
        entry = {"metric": "acc" if hib else "bits_per_byte", "higher_is_better": hib, "languages": {}}
        for lang, value in langs.items():
            if isinstance(value, list):  # items
                if "bits" in value[0]:
                    score = sum(i["bits"] for i in value) / sum(i["bytes"] for i in value)
                else:
                    score = sum(i["score"] for i in value) / len(value)
                entry["languages"][lang] = {"score": score, "n": len(value), "items": value}
            else:
                entry["languages"][lang] = {"score": value, "n": 1}
        out["tasks"][task] = entry
    return out


# Three families, two languages each (scores only, no items).
FAMILY = {"a": "F1", "b": "F1", "c": "F2", "d": "F2", "e": "F3", "f": "F3"}
TEACHER = {"a": 0.8, "b": 0.6, "c": 0.9, "d": 0.5, "e": 0.7, "f": 0.4}
STUDENT = {"a": 0.7, "b": 0.3, "c": 0.9, "d": 0.6, "e": 0.3, "f": 0.2}


def test_drops_family_means_and_des_by_hand():
    rep = compare(results("T", {"x": (True, TEACHER)}), results("S", {"x": (True, STUDENT)}),
                  family_of=FAMILY, n_boot=0, n_perm=0)
    eq = rep.tasks["x"]
    drops = {r.language: r.drop for r in eq.languages}
    # higher is better: drop = teacher - student
    # a .8-.7=.1  b .6-.3=.3  c .9-.9=0  d .5-.6=-.1  e .7-.3=.4  f .4-.2=.2
    assert drops == pytest.approx({"a": 0.1, "b": 0.3, "c": 0.0, "d": -0.1, "e": 0.4, "f": 0.2})
    fam = {f.family: f.drop for f in eq.families}
    # F1 (.1+.3)/2=.2   F2 (0-.1)/2=-.05   F3 (.4+.2)/2=.3
    assert fam == pytest.approx({"F1": 0.2, "F2": -0.05, "F3": 0.3})
    # mean .45/3=.15; deviations .05 -.2 .15; squares .0025 .04 .0225; sum .065; /3 (population)
    assert eq.des == pytest.approx(0.065 / 3)
    assert eq.worst_family == "F3" and eq.best_family == "F2"
    # relative = drop / teacher: a .1/.8=.125 b .3/.6=.5 c 0 d -.1/.5=-.2 e .4/.7 f .2/.4=.5
    rel = {r.language: r.relative_drop for r in eq.languages}
    assert rel == pytest.approx({"a": 0.125, "b": 0.5, "c": 0.0, "d": -0.2, "e": 0.4 / 0.7, "f": 0.5})
    fam_rel = {f.family: f.relative_drop for f in eq.families}
    # F1 (.125+.5)/2=.3125  F2 (0-.2)/2=-.1  F3 (.4/.7+.5)/2
    assert fam_rel == pytest.approx({"F1": 0.3125, "F2": -0.1, "F3": (0.4 / 0.7 + 0.5) / 2})
    assert eq.des_relative == pytest.approx(np.var([0.3125, -0.1, (0.4 / 0.7 + 0.5) / 2]))
    assert eq.des_ci is None and eq.permutation_p is None  # n_boot=0, n_perm=0


def test_des_is_population_variance():
    # values 1, 2, 3, 6: mean 3; squared deviations 4 1 0 9 = 14; population 14/4 = 3.5 (sample: 14/3)
    assert des([1, 2, 3, 6]) == pytest.approx(3.5)
    assert des([0.4]) == 0.0


def test_lower_is_better_is_oriented_positive_when_worse():
    # bits per byte: teacher 1.0, student 1.2 -> student is worse; drop = 1.2 - 1.0 = +.2, relative .2/1 = .2
    rep = compare(results("T", {"bpb": (False, {"sw": 1.0, "de": 0.8})}),
                  results("S", {"bpb": (False, {"sw": 1.2, "de": 0.7})}),
                  family_of={"sw": "Niger-Congo", "de": "Indo-European"}, n_boot=0, n_perm=0)
    rows = {r.language: r for r in rep.tasks["bpb"].languages}
    assert rows["sw"].drop == pytest.approx(0.2) and rows["sw"].relative_drop == pytest.approx(0.2)
    # de improved: 0.7 - 0.8 = -.1, relative -.1/.8 = -.125
    assert rows["de"].drop == pytest.approx(-0.1) and rows["de"].relative_drop == pytest.approx(-0.125)
    assert rep.tasks["bpb"].worst_family == "Niger-Congo"


def test_bits_per_byte_scores_are_ratios_of_sums():
    # teacher: (10 bits, 4 bytes), (2, 1) -> 12/5 = 2.4   (the mean of ratios, (2.5+2)/2 = 2.25, is wrong)
    # student: (12, 4), (3, 1) -> 15/5 = 3.0;   drop = 3.0 - 2.4 = .6, relative .6/2.4 = .25
    t_items = [{"id": "0", "score": 2.5, "bits": 10.0, "bytes": 4},
               {"id": "1", "score": 2.0, "bits": 2.0, "bytes": 1}]
    s_items = [{"id": "0", "score": 3.0, "bits": 12.0, "bytes": 4},
               {"id": "1", "score": 3.0, "bits": 3.0, "bytes": 1}]
    t, s = results("T", {"bpb": (False, {"sw": t_items})}), results("S", {"bpb": (False, {"sw": s_items})})
    assert t["tasks"]["bpb"]["languages"]["sw"]["score"] == pytest.approx(2.4)
    row = compare(t, s, family_of={"sw": "NC"}, n_boot=200, n_perm=0).tasks["bpb"].languages[0]
    assert row.teacher == pytest.approx(2.4) and row.student == pytest.approx(3.0)
    assert row.drop == pytest.approx(0.6) and row.relative_drop == pytest.approx(0.25)
    # each replicate draws ids {0,0}, {0,1} or {1,1}: drops 24/8-20/8=.5, .6, 6/2-4/2=1.0; all in [.5, 1]
    assert row.paired and 0.5 - 1e-9 <= row.drop_ci.low <= row.drop_ci.high <= 1.0 + 1e-9


def test_recorded_score_must_match_items():
    t = results("T", {"x": (True, {"sw": [{"id": "0", "score": 1.0}, {"id": "1", "score": 0.0}]})})
    t["tasks"]["x"]["languages"]["sw"]["score"] = 0.9  # items say 0.5
    with pytest.raises(ValueError, match=r"tasks\.x\.languages\.sw: score 0.9 but its items give 0.5"):
        load_results(t)


def test_bad_files_get_clear_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "other/2", "model": "m", "model_name": "m", "tasks": {}}))
    with pytest.raises(ValueError, match="(?s)bad.json.*expected 'aetheris.results/1'"):
        load_results(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_results(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="no family known for language.*zz"):
        compare(results("T", {"x": (True, {"zz": 0.5})}), results("S", {"x": (True, {"zz": 0.4})}),
                family_of={}, n_boot=0, n_perm=0)


def items(scores, prefix="i"):
    return [{"id": f"{prefix}{k}", "score": float(v)} for k, v in enumerate(scores)]


def boot_pair(paired=True, seed=0, n_boot=500):
    rng = np.random.default_rng(1)
    out_t, out_s = {}, {}
    for lang in FAMILY:
        t = rng.uniform(0.3, 0.9, size=40)
        s = t - 0.1  # every item loses exactly .1
        out_t[lang] = items(t)
        out_s[lang] = items(s, prefix="i" if paired else "j")
    return compare(results("T", {"x": (True, out_t)}), results("S", {"x": (True, out_s)}),
                   family_of=FAMILY, n_boot=n_boot, n_perm=0, seed=seed).tasks["x"]


def test_paired_bootstrap_of_a_constant_item_drop_is_a_point():
    # paired by id, each resample has drop mean(t) - mean(t - .1) = .1 exactly, so the interval is [.1, .1]
    eq = boot_pair(paired=True)
    for row in eq.languages:
        assert row.paired
        assert row.drop == pytest.approx(0.1)
        assert (row.drop_ci.low, row.drop_ci.high) == pytest.approx((0.1, 0.1))
    # every family drop is .1 in every replicate, so DES is 0 in every replicate
    assert eq.des == pytest.approx(0.0, abs=1e-20)
    assert (eq.des_ci.low, eq.des_ci.high) == pytest.approx((0.0, 0.0), abs=1e-20)
    # unpaired (ids differ), teacher and student are resampled separately: the interval opens up
    for row in boot_pair(paired=False).languages:
        assert not row.paired
        assert row.drop_ci.low < 0.1 - 0.02 and row.drop_ci.high > 0.1 + 0.02


def test_bootstrap_is_seeded_and_contains_the_point_estimate():
    rng = np.random.default_rng(7)
    t = {lang: items(rng.integers(0, 2, size=60)) for lang in FAMILY}
    s = {lang: items(rng.integers(0, 2, size=60)) for lang in FAMILY}
    run = lambda seed: compare(results("T", {"x": (True, t)}), results("S", {"x": (True, s)}),
                               family_of=FAMILY, n_boot=300, n_perm=0, seed=seed).tasks["x"]
    a, b, c = run(0), run(0), run(1)
    assert a.model_dump() == b.model_dump()
    assert a.des_ci != c.des_ci
    for row in a.languages:
        assert row.drop_ci.low <= row.drop <= row.drop_ci.high
        assert row.drop_ci.low < row.drop_ci.high
    for fam in a.families:
        assert fam.drop_ci.low <= fam.drop <= fam.drop_ci.high
    assert 0 <= a.des_ci.low < a.des_ci.high


def test_permutation_p_is_one_when_drops_are_identical():
    # every permutation gives DES 0 = observed, so (1 + n_perm) / (1 + n_perm) = 1
    assert permutation_p([0.3] * 6, list(FAMILY.values()), n_perm=500) == 1.0


def test_permutation_p_is_small_when_drop_follows_family():
    fam = ["A"] * 4 + ["B"] * 4 + ["C"] * 4
    drops = [0.00, 0.01, 0.02, 0.01, 0.30, 0.31, 0.29, 0.30, 0.60, 0.61, 0.59, 0.62]
    # only the 6 relabelings of the true partition (of 12!/(4!^3) = 34650) reach the observed DES:
    # expected p ~ 6/34650 ~ 2e-4, so with 5000 permutations about (1 + 1) / 5001
    p = permutation_p(drops, fam, n_perm=5000, seed=0)
    assert p < 0.005
    assert permutation_p(drops, fam, n_perm=5000, seed=0) == p  # seeded
    assert permutation_p([0.1, 0.2], ["A", "A"]) is None  # one family: no test


def test_spearman_with_tier_and_fertility():
    # drops a .1 b .3 c 0 d -.1 e .4 f .2 -> ranks a3 b5 c2 d1 e6 f4
    # tiers a3 b1 c4 d5 e0 f2            -> ranks a4 b2 c5 d6 e1 f3
    # d = -1 3 -3 -5 5 1; sum d^2 = 70; rho = 1 - 6*70/(6*(36-1)) = 1 - 2 = -1
    tier = {"a": 3, "b": 1, "c": 4, "d": 5, "e": 0, "f": 2}
    fert = {"a": 1.0, "b": 1.4, "c": 0.9, "d": 0.5, "e": 2.0, "f": 1.2}  # same order as drops: rho = 1
    eq = compare(results("T", {"x": (True, TEACHER)}), results("S", {"x": (True, STUDENT)}),
                 family_of=FAMILY, tier_of=tier, fertility_of=fert, n_boot=0, n_perm=0).tasks["x"]
    assert eq.spearman_tier.rho == pytest.approx(-1.0) and eq.spearman_tier.n == 6
    assert eq.spearman_fertility.rho == pytest.approx(1.0)


def test_report_is_json_serialisable_and_covers_shared_tasks(tmp_path):
    t = results("T", {"x": (True, TEACHER), "only_teacher": (True, TEACHER)})
    s = results("S", {"x": (True, STUDENT)})
    (tmp_path / "t.json").write_text(json.dumps(t))
    rep = compare(tmp_path / "t.json", s, family_of=FAMILY, level="group", n_boot=0, n_perm=100)
    assert list(rep.tasks) == ["x"] and rep.level == "group" and rep.teacher == "T"
    back = json.loads(rep.model_dump_json())
    assert back["tasks"]["x"]["des"] == pytest.approx(0.065 / 3)
    with pytest.raises(ValueError, match="only_teacher"):
        compare(t, s, family_of=FAMILY, tasks=["only_teacher"])


def test_default_maps_from_language_registry():
    languages = pytest.importorskip("aetheris.languages")
    sw = languages.get("sw")
    t = results("T", {"x": (True, {"sw": 0.6, "de": 0.8, "en": 0.9})})
    s = results("S", {"x": (True, {"sw": 0.4, "de": 0.75, "en": 0.88})})
    for level in ("family", "group"):
        eq = compare(t, s, level=level, n_boot=0, n_perm=0).tasks["x"]
        row = next(r for r in eq.languages if r.language == "sw")
        assert row.family == getattr(sw, level)


# -- paired DES difference -------------------------------------------------------------------


def students_on_the_same_items(drop_of, noise=0.05, n=40):
    """Teacher and one student per {name: {lang: drop}}: the same item ids, each item loses its
    language's drop plus noise, so the bootstrap has something to resample."""
    rng = np.random.default_rng(3)
    t = {lang: rng.uniform(0.3, 0.9, size=n) for lang in FAMILY}
    out = {"T": results("T", {"x": (True, {lang: items(v) for lang, v in t.items()})})}
    for name, drops in drop_of.items():
        langs = {lang: items(t[lang] - drops[lang] + rng.normal(0, noise, size=n)) for lang in FAMILY}
        out[name] = results(name, {"x": (True, langs)})
    return out


def test_des_difference_of_a_row_with_itself_is_zero():
    r = students_on_the_same_items({"S": {lang: 0.1 * (lang in "ab") for lang in FAMILY}})
    d = des_difference(r["T"], r["S"], r["S"], "x", family_of=FAMILY, n_boot=300)
    assert d.difference == 0 and (d.difference_ci.low, d.difference_ci.high) == (0, 0)
    assert d.share_a_higher == 0 and d.paired and d.languages == sorted(FAMILY)
    assert (d.a, d.b, d.teacher, d.task) == ("S", "S", "T", "x")


def test_des_difference_is_the_difference_of_compare_des():
    rng = np.random.default_rng(7)
    t, a, b = ({lang: items(rng.integers(0, 2, size=60)) for lang in FAMILY} for _ in range(3))
    t, a, b = (results(n, {"x": (True, v)}) for n, v in (("T", t), ("A", a), ("B", b)))
    d = des_difference(t, a, b, "x", family_of=FAMILY, n_boot=300, seed=5)
    rep = {s["model_name"]: compare(t, s, family_of=FAMILY, n_boot=300, n_perm=0, seed=5).tasks["x"]
           for s in (a, b)}
    assert d.des_a == pytest.approx(rep["A"].des) and d.des_b == pytest.approx(rep["B"].des)
    assert d.difference == pytest.approx(rep["A"].des - rep["B"].des)
    assert d.difference_ci.low <= d.difference <= d.difference_ci.high
    no_boot = des_difference(t, a, b, "x", family_of=FAMILY, n_boot=0)
    assert no_boot.difference == pytest.approx(d.difference) and no_boot.difference_ci is None


def test_drop_concentrated_in_one_family_is_less_fair_than_the_same_mean_drop_spread_evenly():
    # concentrated: F1 (a, b) loses .3, F2 and F3 nothing: family drops .3 0 0, DES = .02
    # even: every language loses .1: the same mean drop, DES ~ 0 (noise only)
    r = students_on_the_same_items({
        "concentrated": {lang: 0.3 if FAMILY[lang] == "F1" else 0.0 for lang in FAMILY},
        "even": dict.fromkeys(FAMILY, 0.1),
    })
    d = des_difference(r["T"], r["concentrated"], r["even"], "x", family_of=FAMILY, n_boot=500)
    assert d.des_a == pytest.approx(0.02, abs=0.005) and d.des_b < 0.002
    assert d.difference > 0 and d.difference_ci.low > 0 and d.share_a_higher > 0.99
    back = des_difference(r["T"], r["even"], r["concentrated"], "x", family_of=FAMILY, n_boot=500)
    assert back.difference == pytest.approx(-d.difference)
    assert (back.difference_ci.low, back.difference_ci.high) == pytest.approx(
        (-d.difference_ci.high, -d.difference_ci.low))
    assert back.share_a_higher < 0.01


def test_des_difference_refuses_unpaired_items():
    r = students_on_the_same_items({"A": dict.fromkeys(FAMILY, 0.1), "B": dict.fromkeys(FAMILY, 0.1)})
    langs = r["B"]["tasks"]["x"]["languages"]
    langs["c"]["items"] = [{**it, "id": f"other-{it['id']}"} for it in langs["c"]["items"]]
    with pytest.raises(ValueError, match=r"language 'c': B's items do not pair"):
        des_difference(r["T"], r["A"], r["B"], "x", family_of=FAMILY, n_boot=100)
    langs["c"] = {"score": langs["c"]["score"], "n": 40}  # a score without items
    with pytest.raises(ValueError, match=r"language 'c'"):
        des_difference(r["T"], r["B"], r["A"], "x", family_of=FAMILY, n_boot=100)
    with pytest.raises(ValueError, match="'y' not scored for T, A, B"):
        des_difference(r["T"], r["A"], r["B"], "y", family_of=FAMILY)
