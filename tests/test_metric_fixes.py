"""The metric fixes of issue 11 (each fails on the code before the fix), on real pbc-dev
images and real tiny-GAN samples."""
from __future__ import annotations

import copy

import pytest
import torch

import classifiers
from classifiers.recipes import load_recipe
from wbcgen import metrics
from wbcgen.data import load_cells
from wbcgen.evaluate import checks, dose, regimes

SIZE = tuple(classifiers.model_class("wbcsnet").input_size)


@pytest.fixture(scope="module")
def pool(pbc_small, gan_work):
    real = load_cells(pbc_small, size=SIZE[-1], progress=False)
    syn = load_cells(gan_work[1], size=SIZE[-1], progress=False)
    return regimes.make_pool(real, syn, None, SIZE)


def _real_part(pool, idx):
    return idx[~torch.isin(idx, pool.synthetic)]


def test_dose_baseline_uses_the_same_real_images_at_every_ratio_in_every_fold(pool):
    kw = dict(folds=3, real_per_class=5, seed=1, val_fraction=0.2)
    base = regimes.build_splits(pool, "real", **kw)
    for ratio in (0.5, 1.0, 2.0):
        mixed = regimes.build_splits(pool, "mixed", mix_ratio=ratio, **kw)
        assert len(mixed) == len(base) == 3
        for b, m in zip(base, mixed):
            assert torch.equal(b["train"], _real_part(pool, m["train"]))      # same real training images
            assert torch.equal(b["val"], m["val"]) and torch.equal(b["test"], m["test"])
            assert len(m["train"]) > len(b["train"])                          # synthetic ones were added


def test_validation_never_holds_synthetic_images_even_with_three_real_images(pbc_small, gan_work):
    real = load_cells(pbc_small, size=SIZE[-1], progress=False)
    three = real.subset([int(torch.nonzero(real.labels == c)[0]) for c in range(3)])   # 1 image of 3 classes
    test = real.subset(torch.arange(len(real))[real.labels < 3][3:])
    syn = load_cells(gan_work[1], size=SIZE[-1], progress=False)
    p = regimes.make_pool(three, syn, test, SIZE)
    for s in regimes.build_splits(p, "mixed", folds=None, mix_ratio=2.0, val_fraction=0.1):
        # run_protocol carves its own validation slice out of "train" (synthetic included) when
        # a split has no "val"; a real-only (here empty) slice must always be given
        assert s.get("val") is not None and not bool(torch.isin(s["val"], p.synthetic).any())


def test_dose_trains_every_ratio_for_the_same_number_of_steps(pool, tmp_path):
    rec = load_recipe("wbcsnet-cpu")
    rec = copy.deepcopy(rec)
    rec["train"].update(epochs=1, batch_size=8)
    res = dose.run_dose(pool, [0.0, 1.5], model="wbcsnet", recipe=rec, out_dir=tmp_path / "dose", folds=2,
                        holdout=0.2, real_per_class=6, seed=0, progress=False)
    steps = [s for row in res["rows"] for s in row["steps_run"]]
    assert len(steps) == 4 and max(steps) - min(steps) <= 1, steps
    assert res["rows"][0]["epochs"] > res["rows"][1]["epochs"]   # the small real-only set runs more epochs


def test_class_balanced_all_fd_equals_fd_on_equal_per_class_counts(pbc_dir):
    """Real pbc-dev pixels (8×8 → 192-d) as features: 'real' in unequal proportions, a disjoint
    set of real images with 10 per class standing in for a synthetic set."""
    cells = load_cells(pbc_dir, size=8, progress=False)
    f = cells.images.flatten(1).double() / 255
    take_r, take_s = [], []
    for c, n in enumerate((40, 30, 12, 11, 15)):               # pbc-dev-like imbalance
        idx = torch.nonzero(cells.labels == c).flatten()
        take_r.append(idx[:n])
        take_s.append(idx[100:110])
    ir, is_ = torch.cat(take_r), torch.cat(take_s)
    fr, yr, fs, ys = f[ir], cells.labels[ir], f[is_], cells.labels[is_]
    out = checks._per_class_distances(fr, yr, fs, ys, cells.classes, seed=0, splits=4)
    br, bs = checks.balanced_indices(yr, ys, seed=0)
    assert torch.bincount(yr[br]).tolist() == [10] * 5 == torch.bincount(ys[bs]).tolist()
    want = metrics.distance_report(fr[br], fs[bs], seed=0, splits=1)
    assert out["overall"]["fd"] == pytest.approx(want["fd"], rel=1e-9)
    assert out["overall"]["fd"] != pytest.approx(metrics.distance_report(fr, fs, splits=1)["fd"], rel=1e-3)
    per = [out[c]["fd"] for c in cells.classes]
    assert out["overall"]["macro"]["fd"] == pytest.approx(sum(per) / 5)
    assert "class-balanced" in out["overall"]["definition"]


def test_distance_features_are_fp32_even_where_bf16_autocast_is_on(pbc_small, monkeypatch):
    import classifiers.runtime as rt

    model = classifiers.create_model("wbcsnet", 5)
    torch.manual_seed(0)
    pred = classifiers.predict.Predictor(model, {"classes": ["a", "b", "c", "d", "e"]}, device="cpu")
    cells = load_cells(pbc_small, size=SIZE[-1], progress=False)
    x = cells.images[:8]
    ref = pred.features(x)
    monkeypatch.setattr(rt, "_CPU_BF16", True)   # as on a CPU with native bf16
    pred._amp, pred._cpu16 = True, True
    assert torch.equal(pred.features(x), ref)


def test_bench_curve_is_leak_free_and_scores_every_segment(pbc_small, tmp_path):
    """bench_curve.py (the default's quality over CPU time): the GAN trains on the split's train part
    only, the judging W-Net is bench_quality's train-part one, every point is scored against the
    same real-vs-real floor at matched sizes, and CPU minutes accumulate."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from evalkit import cli
    from wbcgen.data.splits import load_split
    from wbcgen.provenance import read_train_images

    out = tmp_path / "bq"
    out.mkdir()
    cli("data", "split", pbc_small, "--test-fraction", "0.5", "--seed", "0", "--out", out / "split.json")
    bench = Path(__file__).resolve().parents[1] / "bench" / "bench_curve.py"
    args = [sys.executable, str(bench), "--config", "tiny", "--classes", "basophil", "--steps", "2", "--every", "1",
            "-n", "16", "--threads", "1", "--data", str(pbc_small), "--out", str(out), "--json",
            str(tmp_path / "c.jsonl"), "--no-picture"]
    p = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and {r["class"] for r in rows} == {"basophil"}
    assert 0 < rows[0]["cpu_min"] <= rows[1]["cpu_min"]
    assert rows[0]["fd_floor"] == rows[1]["fd_floor"] > 0      # one floor: the test part's halves
    for r in rows:
        assert r["fd_ratio"] == round(r["fd_matched"] / r["fd_floor"], 2) and 0.0 <= r["check1"] <= 1.0
    split = load_split(out / "split.json")
    test = {sha for sha, v in split["images"].items() if "test" in v["parts"]}
    run = next((out / "curve-runs" / "gan" / "basophil").iterdir())
    seen = {r["sha256"] for r in read_train_images(run)}
    assert len(seen) == 6 and {r["label"] for r in read_train_images(run)} == {"basophil"}
    assert len(test) == 30 and not seen & test
    info = json.loads((out / "real-wnet-e8" / "bench_info.json").read_text())
    assert info["n_train"] == 30                                 # the judging W-Net: train part only


def _bench_quality():
    from evalkit import bench_module

    return bench_module("bench_quality")


def test_bench_quality_reuses_only_a_matching_finished_classifier(pbc_small, tmp_path):
    """bench_quality --reuse-gan keeps a finished TSTR classifier only when its recipe, seed and
    set sizes match the row; anything else is retrained."""
    from wbcgen.data import load_cells

    bq = _bench_quality()
    cells = load_cells(pbc_small, progress=False)
    train, test = cells.images[::2], cells.images[1::2]
    ytrain, ytest = cells.labels[::2], cells.labels[1::2]

    class Test:
        images, labels = test, ytest

        def __len__(self):
            return len(self.images)

    rec, out = bq.recipe("wbcsnet-cpu", 1), tmp_path / "tstr"
    assert bq.finished(out, rec, len(train), len(test), 0) is None          # nothing there yet
    first = bq.classifier_report("wbcsnet", rec, train, ytrain, Test(), out, 0)
    assert 0.0 <= first["balanced_accuracy"] <= 1.0
    stamp = (out / "results.json").stat().st_mtime_ns
    again = bq.classifier_report("wbcsnet", rec, train, ytrain, Test(), out, 0, reuse=True)
    assert again == first and (out / "results.json").stat().st_mtime_ns == stamp   # reused, not retrained
    assert bq.finished(out, bq.recipe("wbcsnet-cpu", 2), len(train), len(test), 0) is None   # other epochs
    assert bq.finished(out, rec, len(train), len(test), 1) is None                           # other seed
    assert bq.finished(out, rec, len(train) - 1, len(test), 0) is None                       # other set


def test_bench_quality_row_goes_into_the_results_table_not_a_later_one(tmp_path):
    """append_row puts a row at the end of the section's FIRST table (the results table), also when
    notes below it hold another table (a curve), and creates the section when it is missing."""
    bq = _bench_quality()
    per = {c: 0.5 for c in bq.CLASSES}
    r = {"date": "2026-12-01 12:00", "label": "x-1min", "minutes": 1.0, "budget_clock": "wall",
         "gan": {"cpu_min": 1.0, "wall_min": 1.0}, "load_start": [1.0], "load_end": [2.0],
         "tstr_wnet": {"balanced_accuracy": 0.5, "recall": per}, "tstr_wbcsnet": {"balanced_accuracy": 0.5, "recall": per},
         "check1": per, "fd": {c: {"fd_ratio": 2.0} for c in bq.CLASSES}, "commit": "abc", "n_per_class": 10, "n_test": 5}
    table = tmp_path / "RESULTS.md"
    bq.append_row(table, r)
    bq.append_row(table, r | {"label": "y-1min"})
    text = table.read_text()
    assert text.count("| x-1min |") == 1 and text.index("| x-1min |") < text.index("| y-1min |")
    table.write_text(text + "\nnotes\n\n| step | fd |\n|---|---|\n| 100 | 1.0 |\n\n## Next section\n")
    bq.append_row(table, r | {"label": "z-1min"})
    lines = table.read_text().split("\n")
    z = next(i for i, line in enumerate(lines) if "| z-1min |" in line)
    assert "| y-1min |" in lines[z - 1] and lines.index("| step | fd |") > z


def test_bench_quality_tstr_is_the_mean_over_classifier_seeds(pbc_small, tmp_path):
    """--tstr-seeds K trains one TSTR classifier per seed (seed 0 in the row's own folder, so rows
    made with one seed are reused) and reports the mean and sd; the table cell says how many."""
    import statistics

    from wbcgen.data import load_cells

    bq = _bench_quality()
    cells = load_cells(pbc_small, progress=False)
    train, ytrain = cells.images[::2], cells.labels[::2]

    class Test:
        images, labels = cells.images[1::2], cells.labels[1::2]

        def __len__(self):
            return len(self.images)

    rec, out = bq.recipe("wbcsnet-cpu", 1), tmp_path / "tstr-wbcsnet"
    res = bq.tstr_report("wbcsnet", rec, train, ytrain, Test(), out, [0, 1])
    assert (out / "results.json").is_file() and (tmp_path / "tstr-wbcsnet-s1" / "results.json").is_file()
    one = [bq.finished(d, rec, len(train), len(Test()), s)["test"]
           for d, s in ((out, 0), (tmp_path / "tstr-wbcsnet-s1", 1))]
    bal = [t["balanced_accuracy"] for t in one]
    assert res["seeds"] == [0, 1] and res["balanced_accuracy"] == pytest.approx(statistics.fmean(bal))
    assert res["balanced_accuracy_sd"] == pytest.approx(statistics.stdev(bal))
    for c in bq.CLASSES:
        assert res["recall"][c] == pytest.approx(statistics.fmean(t["per_class"][c]["recall"] for t in one))
    assert "2 seeds" in bq.tstr_cell(res) and f"**{100 * res['balanced_accuracy']:.1f}**" in bq.tstr_cell(res)
    single = bq.mean_report([res["per_seed"][0]], [0])
    assert single["seeds"] == [0] and "seeds" not in bq.tstr_cell(single)
