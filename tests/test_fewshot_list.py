"""A few-shot classifier run (`train-classifier --per-class K --init-from RUN`) records the
images its draws trained on (train_images.csv), so `evaluate --classifier` can check it."""
from __future__ import annotations

import csv

import torch

from evalkit import cli


def test_few_shot_run_writes_its_training_list(pbc_small, tmp_path):
    from classifiers.fewshot import few_shot_splits
    from wbcgen.data import load_cells
    from wbcgen.evaluate.leakage import classifier_list

    base, few = tmp_path / "base", tmp_path / "few"
    cli("train-classifier", "--model", "wbcsnet", "--data", pbc_small, "--epochs", 1, "--out", base, "--quiet")
    cli("train-classifier", "--model", "wbcsnet", "--data", pbc_small, "--per-class", 3, "--folds", 2,
        "--epochs", 1, "--init-from", base, "--out", few, "--quiet")
    cells = load_cells(pbc_small, progress=False)
    splits, _ = few_shot_splits(cells.labels, 3, 2, 0, len(cells.classes))
    drawn = torch.unique(torch.cat([s["train"] for s in splits]))
    want = {cells.manifest[int(i)]["sha256"] for i in drawn}
    rows = list(csv.DictReader(open(few / "train_images.csv", encoding="utf-8")))
    assert 15 < len(rows) <= 30 and len(rows) == len(drawn)  # two draws of 3 per class, 5 classes
    assert {r["sha256"] for r in rows} == want
    by_class = {c: sum(r["label"] == c for r in rows) for c in cells.classes}
    assert all(3 <= n <= 6 for n in by_class.values()), by_class
    assert all((pbc_small / r["path"]).is_file() for r in rows)  # paths relative to the data root
    assert classifier_list(few) == want  # what evaluate's leakage guard reads for --classifier
