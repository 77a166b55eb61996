"""Split files (wbcgen.data.splits, `wbcgen data split`, --split on train-gan /
train-classifier / evaluate), on real pbc-dev images."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from classifiers.runtime import UserError
from wbcgen.cli import main
from wbcgen.data import CLASSES, apply_split, load_cells, load_split, make_split, save_split, split_indices


@pytest.fixture(scope="module")
def pbc_all(pbc_dir):
    """All of pbc-dev at 16 px: the split only needs the hashes and labels."""
    return load_cells(pbc_dir, size=16, progress=False)


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_holdout_split_is_stratified_deterministic_and_duplicate_safe(pbc_all, tmp_path):
    s = make_split(pbc_all, test_fraction=0.2, seed=0)
    assert s == make_split(pbc_all, test_fraction=0.2, seed=0)
    assert s["images"] != make_split(pbc_all, test_fraction=0.2, seed=1)["images"]
    idx = split_indices(pbc_all, s)
    assert sum(len(v) for v in idx.values()) == len(pbc_all)            # every image in exactly one part
    assert len(set(idx["train"].tolist()) & set(idx["test"].tolist())) == 0
    counts = pbc_all.counts()
    for c in CLASSES:   # stratified: 20 % of each class (± rounding) tested
        assert abs(s["counts"][0]["test"][c] - 0.2 * counts[c]) <= 1
    assert s["counts"][0]["test"]["basophil"] == 84 and s["counts"][0]["train"]["basophil"] == 334
    # pbc-dev holds one pair of byte-identical images: both on one side
    assert pbc_all.duplicates, "pbc-dev is expected to contain an exact duplicate pair"
    dup = pbc_all.duplicates[0]
    where = {m["path"]: p for p, ix in idx.items() for m in (pbc_all.manifest[i] for i in ix.tolist())}
    assert len({where[d] for d in dup}) == 1
    save_split(tmp_path / "s.json", s)
    back = load_split(tmp_path / "s.json")
    assert torch.equal(apply_split(pbc_all, back, "test").labels, pbc_all.labels[idx["test"]])


def test_folds_and_per_class(pbc_all):
    s = make_split(pbc_all, folds=5, per_class=30, val_fraction=0.1, seed=0)
    seen_test = torch.zeros(len(pbc_all), dtype=torch.long)
    for f in range(5):
        idx = split_indices(pbc_all, s, f)
        seen_test[idx["test"]] += 1
        assert s["counts"][f]["train"] == {c: 30 for c in CLASSES}
        assert s["counts"][f]["val"] == {c: 3 for c in CLASSES}
        assert not set(idx["train"].tolist()) & set(idx["test"].tolist())
    assert bool((seen_test == 1).all())                                   # each image tested exactly once
    with pytest.raises(UserError, match="has 5 folds; pass --fold"):
        apply_split(pbc_all, s, "train")
    with pytest.raises(UserError, match="out of range"):
        apply_split(pbc_all, s, "train", fold=5)


def test_apply_split_refuses_missing_images_and_other_data(pbc_all, zheng_dir):
    s = make_split(pbc_all, seed=0)
    fewer = pbc_all.subset(torch.arange(1, len(pbc_all)))
    with pytest.raises(UserError, match=r"^1 image\(s\) of the split \(made from pbc-dev\) are missing"):
        apply_split(fewer, s, "train")
    other = load_cells(zheng_dir, size=16, progress=False,
                       label_map={"1": "neutrophil", "2": "lymphocyte", "3": "monocyte", "4": "eosinophil",
                                  "5": "basophil"})
    with pytest.raises(UserError, match="made for a different data set"):
        apply_split(other, s, "train")
    # extra images (not in the split) are simply in no part
    assert len(apply_split(pbc_all, make_split(fewer, seed=0), "train")) == \
        sum(make_split(fewer, seed=0)["counts"][0]["train"].values())


def test_split_cli_and_train_gan_uses_train_part_only(pbc_small, tmp_path):
    out = tmp_path / "split.json"
    res = _cli("data", "split", pbc_small, "--test-fraction", "0.25", "--seed", "0", "--out", out)
    assert res.exit_code == 0, res.output
    s = json.loads(out.read_text())
    assert s["kind"] == "wbcgen-split" and s["counts"][0]["test"] == {c: 3 for c in CLASSES}
    assert s["data"]["name"] == pbc_small.name and str(tmp_path) not in out.read_text()
    res = _cli("data", "split", pbc_small, "--seed", "0", "--out", out)
    assert res.exit_code == 1 and "--overwrite" in res.output
    res = _cli("data", "split", pbc_small, "--folds", "3", "--test-fraction", "0.2", "--out", tmp_path / "x.json")
    assert res.exit_code == 1 and "drop --test-fraction" in res.output
    res = _cli("train-gan", "--cls", "basophil", "--data", pbc_small, "--split", out, "--config", "tiny",
               "--steps", "1", "--out", tmp_path / "runs", "--quiet")
    assert res.exit_code == 0, res.output
    cfg = json.loads(next((tmp_path / "runs" / "gan" / "basophil").glob("*/config.json")).read_text())
    assert cfg["data"]["n_images"] == 9 and cfg["data"]["split"]["file"] == "split.json"
    res = _cli("train-gan", "--cls", "basophil", "--data", pbc_small, "--fold", "1", "--config", "tiny",
               "--steps", "1", "--out", tmp_path / "runs2")
    assert res.exit_code == 1 and "--fold needs --split" in res.output


def test_train_classifier_with_split_trains_on_train_tests_on_test(pbc_small, tmp_path):
    split = tmp_path / "split.json"
    assert _cli("data", "split", pbc_small, "--test-fraction", "0.25", "--val-fraction", "0.1", "--seed", "0",
                "--out", split).exit_code == 0
    out = tmp_path / "clf"
    res = _cli("train-classifier", "--model", "wbcsnet", "--data", pbc_small, "--split", split, "--epochs", "1",
               "--out", out, "--quiet")
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    assert r["test"]["n"] == 15
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["protocol"]["split"]["file"] == "split.json"
    res = _cli("train-classifier", "--model", "wbcsnet", "--data", pbc_small, "--split", split, "--folds", "2",
               "--out", tmp_path / "c2")
    assert res.exit_code == 1 and "drop --folds" in res.output
    ev = tmp_path / "ev"
    res = _cli("evaluate", "--train-on", "real", "--real", pbc_small, "--split", split, "--model", "wbcsnet",
               "--epochs", "1", "--out", ev, "--quiet")
    assert res.exit_code == 0, res.output
    r = json.loads((ev / "results.json").read_text())
    assert r["test"]["n"] == 15 and r["protocol"]["kind"] == "train-test" and r["split"]["file"] == "split.json"
    assert r["n_train_real"] + sum(r["n_train_per_class"]["validation"].values()) == 45
