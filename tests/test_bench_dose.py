"""bench/bench_dose.py's aggregation: t-intervals over folds and paired (ratio r − ratio 0) differences."""
import json
import math

import pytest
from evalkit import bench_module

bd = bench_module("bench_dose")


def test_t_quantiles_match_tables():
    assert bd.t975(1) == 12.706 and bd.t975(4) == 2.776 and bd.t975(10) == 2.228
    # beyond the table: the expansion against published values (df 20: 2.086, 30: 2.042, 120: 1.980)
    assert bd.t975(20) == pytest.approx(2.086, abs=0.002)
    assert bd.t975(30) == pytest.approx(2.042, abs=0.002)
    assert bd.t975(120) == pytest.approx(1.980, abs=0.001)
    with pytest.raises(ValueError):
        bd.t975(0)


def test_interval_on_known_numbers():
    d = bd.t_interval([0.5, 0.6, 0.7])  # mean 0.6, sd 0.1, n 3 → half = 4.303 · 0.1 / √3
    assert d["mean"] == pytest.approx(0.6)
    assert d["half"] == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert (d["low"], d["high"]) == pytest.approx((0.6 - 0.248434, 0.6 + 0.248434), abs=1e-6)
    one = bd.t_interval([0.4])
    assert one["mean"] == 0.4 and one["half"] is None


def test_aggregate_paired_differences():
    # five folds; ratio 1 is +2 points in every fold but +/-, ratio 2 always exactly +5 points
    folds = [{0: 0.50, 1: 0.53, 2: 0.55}, {0: 0.60, 1: 0.61, 2: 0.65}, {0: 0.40, 1: 0.43, 2: 0.45},
             {0: 0.70, 1: 0.71, 2: 0.75}, {0: 0.55, 1: 0.57, 2: 0.60}]
    agg = bd.aggregate(folds)
    assert agg["ratios"] == [0.0, 1.0, 2.0] and agg["n_folds"] == 5
    base = agg["balanced_accuracy"]["0"]
    assert base["mean"] == pytest.approx(0.55)
    sd = math.sqrt(sum((x - 0.55) ** 2 for x in (0.5, 0.6, 0.4, 0.7, 0.55)) / 4)
    assert base["half"] == pytest.approx(2.776 * sd / math.sqrt(5))
    d1 = agg["paired_vs_0"]["1"]  # differences 0.03, 0.01, 0.03, 0.01, 0.02
    assert d1["values"] == pytest.approx([0.03, 0.01, 0.03, 0.01, 0.02])
    assert d1["mean"] == pytest.approx(0.02)
    assert d1["half"] == pytest.approx(2.776 * 0.01 / math.sqrt(5))
    assert d1["beats_real_only"] is True
    # the paired interval is far narrower than the unpaired one: fold-to-fold spread cancels
    assert d1["half"] < base["half"] / 5
    d2 = agg["paired_vs_0"]["2"]
    assert d2["mean"] == pytest.approx(0.05) and d2["half"] == pytest.approx(0, abs=1e-12)
    # a difference whose interval straddles 0 does not "beat real only"
    worse = bd.aggregate([{0: 0.5, 1: 0.52}, {0: 0.5, 1: 0.47}, {0: 0.5, 1: 0.51}])
    assert worse["paired_vs_0"]["1"]["beats_real_only"] is False
    with pytest.raises(ValueError):
        bd.aggregate([{0: 0.5, 1: 0.6}, {0: 0.5}])


def test_resume_keeps_a_finished_fold_only_with_the_same_settings(tmp_path):
    import argparse

    a = argparse.Namespace(method="fast64", minutes=30.0, n=120, epochs=16, dose=[0.0, 0.5, 1.0], recipe="evaluate-scarce-cpu",
                           per_class=30, folds=5, seed=0, threads=2, cpu_budget=True, precision="fp32")
    assert bd.finished_fold(tmp_path, a) is None  # nothing saved yet
    result = {"fold": 3, "balanced_accuracy": {"0": 0.61, "0.5": 0.64, "1": 0.6}, "cpu_min": 41.5}
    bd.save_fold(tmp_path, a, result)
    assert not (tmp_path / "fold.json.tmp").exists()
    assert bd.finished_fold(tmp_path, a) == result
    for change in ({"minutes": 20.0}, {"epochs": 8}, {"dose": [0.0, 1.0]}, {"cpu_budget": False}, {"method": "cond"},
                   {"precision": "bf16"}):
        other = argparse.Namespace(**(vars(a) | change))
        assert bd.finished_fold(tmp_path, other) is None, change


def test_the_ledger_keeps_a_fold_after_its_run_folder_is_gone(tmp_path):
    """A finished fold is appended to the committed ledger too; a new machine (an empty OUT) reads it back
    with --resume, for the same fold of the same split with the same settings only."""
    import argparse
    import shutil

    a = argparse.Namespace(method="fast64x2", minutes=118.0, n=120, epochs=16, dose=[0.0, 0.5], recipe="evaluate-scarce-cpu",
                           per_class=30, folds=5, seed=0, threads=2, cpu_budget=True, precision="bf16")
    ledger, fdir = tmp_path / "dose_folds.jsonl", tmp_path / "out" / "fold-2"
    fdir.mkdir(parents=True)
    first = {"fold": 2, "balanced_accuracy": {"0": 0.95, "0.5": 0.94}, "date": "2026-12-05 10:00"}
    bd.save_fold(fdir, a, first, 2, "abc", ledger)
    shutil.rmtree(tmp_path / "out")  # the run folder went with the machine
    fdir.mkdir(parents=True)
    assert bd.finished_fold(fdir, a, 2, "abc", ledger) == first
    assert bd.finished_fold(fdir, a, 3, "abc", ledger) is None  # another fold
    assert bd.finished_fold(fdir, a, 2, "other-split", ledger) is None  # another split
    assert bd.finished_fold(fdir, argparse.Namespace(**(vars(a) | {"precision": "fp32"})), 2, "abc", ledger) is None
    assert bd.finished_fold(fdir, a, 2, "abc", None) is None  # --no-ledger
    again = first | {"balanced_accuracy": {"0": 0.9, "0.5": 0.91}, "date": "2026-12-06 10:00"}
    bd.save_fold(fdir, a, again, 2, "abc", ledger)  # a rerun of the fold: the latest line wins
    lines = [json.loads(x) for x in ledger.read_text().splitlines()]
    assert [x["result"]["date"] for x in lines] == ["2026-12-05 10:00", "2026-12-06 10:00"]
    assert all(x["machine"] and x["split_sha256"] == "abc" and x["settings"]["precision"] == "bf16" for x in lines)
    shutil.rmtree(fdir)
    fdir.mkdir()
    with open(ledger, "a") as f:  # a run killed while appending leaves half a line: skipped, not an error
        f.write('\n{"fold": 2, "split_sha256": "abc", "sett')
    assert bd.finished_fold(fdir, a, 2, "abc", ledger) == again
    third = first | {"date": "2026-12-07 10:00"}
    bd.save_fold(fdir, a, third, 2, "abc", ledger)  # the next fold starts on a line of its own
    assert bd.finished_fold(fdir / "elsewhere", a, 2, "abc", ledger) == third
