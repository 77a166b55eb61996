"""Deterministic stratified k-fold splits, saved to and reloaded from JSON."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import torch

from classifiers.runtime import UserError, atomic_write_json


def _labels_hash(labels: torch.Tensor) -> str:
    return hashlib.sha256(labels.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def stratified_kfold(labels: torch.Tensor | Sequence[int], k: int = 10, seed: int = 0,
                     groups: Sequence[str] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``k`` (train_idx, test_idx) pairs; every class spread evenly over the folds.

    With ``groups`` (e.g. image sha256), members of a group always share a fold, so exact
    duplicates never straddle train and test.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    n = len(labels)
    if k < 2:
        raise UserError(f"--folds must be at least 2, got {k}")
    counts = torch.bincount(labels)
    small = [int(c) for c in counts if 0 < c < k]
    if small:
        raise UserError(f"a class has only {min(small)} images, fewer than --folds {k}; use fewer folds")
    if groups is None:
        unit_of = torch.arange(n)
    else:
        uniq = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        unit_of = torch.tensor([uniq[g] for g in groups])
    n_units = int(unit_of.max()) + 1 if n else 0
    unit_label = torch.zeros(n_units, dtype=torch.int64).scatter_(0, unit_of, labels)
    gen = torch.Generator().manual_seed(seed)
    unit_fold = torch.empty(n_units, dtype=torch.int64)
    offset = 0
    for c in range(int(labels.max()) + 1 if n else 0):
        members = torch.nonzero(unit_label == c).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        unit_fold[members] = (torch.arange(len(members)) + offset) % k
        offset += len(members)
    fold = unit_fold[unit_of]
    return [(torch.nonzero(fold != f).flatten(), torch.nonzero(fold == f).flatten()) for f in range(k)]


def save_splits(path: str | Path, splits, labels, seed: int) -> None:
    atomic_write_json(path, {"k": len(splits), "seed": seed, "n": len(labels),
                             "labels_sha256": _labels_hash(torch.as_tensor(labels)),
                             "test_folds": [t.tolist() for _, t in splits]})


def load_splits(path: str | Path, labels=None):
    try:
        d = json.loads(Path(path).read_text())
        tests = [torch.tensor(t, dtype=torch.int64) for t in d["test_folds"]]
        n = int(d["n"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read splits file {path}: {type(e).__name__}") from None
    if labels is not None and (len(labels) != n or _labels_hash(torch.as_tensor(labels)) != d["labels_sha256"]):
        raise UserError(f"splits file {path} was made for a different dataset ({n} images)")
    every = torch.arange(n)
    return [(every[~torch.isin(every, t)], t) for t in tests]
